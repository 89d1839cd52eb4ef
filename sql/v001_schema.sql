-- hybridsearch schema v001: collections, documents and chunks.
--
-- Chunks are LIST-partitioned by collection: each collection gets its own partition
-- (created by hybridsearch.create_collection) with an HNSW index on the embedding cast
-- to the collection's fixed dimension, so collections with different models and
-- dimensions coexist and every vector query can use an index. collection_id leads
-- every primary key so the tables can later be distributed by collection (Citus).

CREATE TABLE hybridsearch.collections (
    collection_id   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE
                    CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    embedding_model text NOT NULL CHECK (embedding_model <> ''),
    -- pgvector's HNSW index accepts at most 2000 dimensions for type vector.
    dimensions      integer NOT NULL CHECK (dimensions BETWEEN 1 AND 2000),
    distance        text NOT NULL DEFAULT 'cosine'
                    CHECK (distance IN ('cosine', 'l2', 'inner_product')),
    -- Name of the text analyzer; v001 analyzers are PostgreSQL text search configs.
    analyzer        text NOT NULL DEFAULT 'english',
    -- Free-form defaults (chunking, fusion, prompts) owned by the service layer.
    settings        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    created_at      timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE hybridsearch.collections IS
    'A set of documents sharing one embedding model, dimension, distance and analyzer.';

CREATE TABLE hybridsearch.documents (
    collection_id integer NOT NULL
                  REFERENCES hybridsearch.collections (collection_id) ON DELETE CASCADE,
    document_id   bigint GENERATED ALWAYS AS IDENTITY,
    -- The caller's id for the document (a file path, a row's primary key, ...).
    external_id   text NOT NULL CHECK (external_id <> ''),
    metadata      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    -- Hash of everything that shapes the chunks (text, metadata, chunking settings):
    -- re-adding a document with the same hash is a no-op.
    content_hash  text NOT NULL,
    chunk_count   integer NOT NULL CHECK (chunk_count >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection_id, document_id),
    UNIQUE (collection_id, external_id)
);

CREATE SEQUENCE hybridsearch.chunk_id_seq AS bigint;

CREATE TABLE hybridsearch.chunks (
    collection_id integer NOT NULL,
    chunk_id      bigint NOT NULL DEFAULT nextval('hybridsearch.chunk_id_seq'),
    document_id   bigint NOT NULL,
    ordinal       integer NOT NULL CHECK (ordinal >= 0),
    content       text NOT NULL,
    -- The document's metadata, copied so filters run inside each retrieval branch.
    metadata      jsonb NOT NULL DEFAULT '{}',
    -- Untyped here; each partition pins the dimension with a CHECK constraint.
    embedding     vector NOT NULL,
    fts           tsvector NOT NULL,
    PRIMARY KEY (collection_id, chunk_id),
    UNIQUE (collection_id, document_id, ordinal),
    FOREIGN KEY (collection_id, document_id)
        REFERENCES hybridsearch.documents (collection_id, document_id) ON DELETE CASCADE
) PARTITION BY LIST (collection_id);

ALTER SEQUENCE hybridsearch.chunk_id_seq OWNED BY hybridsearch.chunks.chunk_id;

-- Indexes declared on the parent are created on every partition.
CREATE INDEX chunks_fts_idx ON hybridsearch.chunks USING gin (fts);
CREATE INDEX chunks_metadata_idx ON hybridsearch.chunks USING gin (metadata jsonb_path_ops);
