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
    -- Text analyzer: 'mixed' (default: English stemming plus CJK bigrams), 'cjk',
    -- or any PostgreSQL text search configuration ('english', 'simple', ...).
    analyzer        text NOT NULL DEFAULT 'mixed',
    -- Okapi BM25 parameters for the keyword branch (see hybridsearch.search_keyword).
    bm25_k1         double precision NOT NULL DEFAULT 1.2 CHECK (bm25_k1 >= 0 AND bm25_k1 <= 10),
    bm25_b          double precision NOT NULL DEFAULT 0.75 CHECK (bm25_b >= 0 AND bm25_b <= 1),
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
    -- Owner of the document in a multi-tenant collection ('' when unused); row-level
    -- security below shows a non-owner role only its transaction's tenant.
    tenant_id     text NOT NULL DEFAULT '',
    -- The caller's id for the document (a file path, a row's primary key, ...).
    external_id   text NOT NULL CHECK (external_id <> ''),
    metadata      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    -- Hash of everything that shapes the chunks (text, metadata, chunking settings):
    -- re-adding a document with the same hash is a no-op.
    content_hash  text NOT NULL,
    chunk_count   integer NOT NULL CHECK (chunk_count >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection_id, document_id),
    UNIQUE (collection_id, tenant_id, external_id)
);

-- ---------------------------------------------------------------------------------
-- What BM25 needs from a chunk's tsvector, derived by generated columns on chunks.
-- ---------------------------------------------------------------------------------

-- Term frequencies of a tsvector as {lexeme: count}; exact BM25 scoring reads tf here.
-- Built as json and cast once: about 20 % cheaper per chunk than jsonb_object_agg, which
-- keeps its object sorted as it goes. The lexemes are distinct, so nothing is dropped.
CREATE FUNCTION hybridsearch.term_freqs(p_fts tsvector)
RETURNS jsonb
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT coalesce(
        json_object_agg(u.lexeme, coalesce(array_length(u.positions, 1), 1))::jsonb,
        '{}'::jsonb)
    FROM unnest(p_fts) AS u;
$$;

-- Number of tokens a tsvector holds (the BM25 document length).
CREATE FUNCTION hybridsearch.term_count(p_fts tsvector)
RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT coalesce(sum(coalesce(array_length(u.positions, 1), 1)), 0)::integer
    FROM unnest(p_fts) AS u;
$$;

-- Impact tiers. A term's BM25 contribution grows with its frequency tf in the chunk and
-- shrinks with the chunk's length; both are bucketed so that each (term, tf bucket,
-- length bucket) is one GIN key whose posting list holds the chunks of that tier. The
-- keyword search visits tiers in order of their score bound (the best a chunk in the
-- tier can get for the term) and stops once no unvisited tier can change the top K:
-- impact-ordered postings, with the ordering done by the index key.
--
-- tf buckets: 1..8 exactly, then 9, 12, 16, 24, 32, 48, 64, 128 (each up to the next);
-- positions, and so tf, stop at 256 in a tsvector.
CREATE FUNCTION hybridsearch.tf_buckets()
RETURNS integer[]
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT '{1,2,3,4,5,6,7,8,9,12,16,24,32,48,64,128}'::integer[];
$$;

CREATE FUNCTION hybridsearch.tf_bucket_ranges()
RETURNS TABLE (low integer, high integer)
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT b.low, coalesce(lead(b.low) OVER (ORDER BY b.low) - 1, 256)
    FROM unnest(hybridsearch.tf_buckets()) AS b(low);
$$;

-- Length buckets: half powers of two, floor(2 * log2(length)); bucket n holds lengths
-- from ceil(2^(n/2)).
CREATE FUNCTION hybridsearch.length_bucket(p_length integer)
RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT floor(2 * log(2, greatest(p_length, 1)::numeric))::integer;
$$;

-- The length buckets that chunks between p_shortest and p_longest fall in, with the
-- lengths each can hold in that range.
CREATE FUNCTION hybridsearch.length_bucket_ranges(p_shortest integer, p_longest integer)
RETURNS TABLE (bucket integer, shortest double precision, longest double precision)
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT b.n,
           greatest(p_shortest, ceil(2.0::double precision ^ (b.n / 2.0))),
           least(p_longest, ceil(2.0::double precision ^ ((b.n + 1) / 2.0)) - 1)
    FROM generate_series(hybridsearch.length_bucket(p_shortest),
                         hybridsearch.length_bucket(p_longest)) AS b(n);
$$;

-- The impact key of a term in a tier: '<tf bucket> <length bucket> <lexeme>'.
-- The ::text casts keep these key functions inlinable into impact_keys (an ingest cost
-- per term): integer || text is the STABLE anynonarray || text operator, and PostgreSQL
-- does not inline an IMMUTABLE function whose body is less than immutable.
CREATE FUNCTION hybridsearch.impact_key(p_tf_bucket integer, p_length_bucket integer,
                                        p_lexeme text)
RETURNS text
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT p_tf_bucket::text || ' ' || p_length_bucket::text || ' ' || p_lexeme;
$$;

-- The tf-level key of a term, held by the chunks whose tf of the term is in tf bucket
-- p_tf_bucket or above: the lexeme itself for bucket 1 (every chunk holding the term),
-- else '>=<tf bucket> <lexeme>'. A lexeme holds no space, so no tier key is a level key.
-- Term coverage asks one GIN scan for the chunks holding some terms, with one of them
-- at some tf or more: with tier keys, each term would be an OR of a key per tier, dozens
-- of posting lists that GIN merges one by one, and that the planner prices so high,
-- list by list, that it would rather read a small partition whole.
CREATE FUNCTION hybridsearch.tf_level_key(p_tf_bucket integer, p_lexeme text)
RETURNS text
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT CASE WHEN p_tf_bucket = 1 THEN p_lexeme
                ELSE '>=' || p_tf_bucket::text || ' ' || p_lexeme END;
$$;

-- Per distinct term of a tsvector, its impact key and its tf-level keys, one per tf
-- bucket up to its own (most terms have tf 1, and only the lexeme). One pass over
-- unnest(p_fts), which builds a positions and a weights array per lexeme, collects the
-- lexemes, their tfs and the length; the keys are made from those plain arrays.
CREATE FUNCTION hybridsearch.impact_keys(p_fts tsvector)
RETURNS text[]
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT (SELECT array_agg(hybridsearch.impact_key(
                       t.tf_buckets[pg_catalog.width_bucket(x.tf, t.tf_buckets)],
                       t.length_bucket, x.lexeme))
            FROM unnest(t.lexemes, t.tfs) AS x(lexeme, tf))
           || t.lexemes  -- tf bucket 1
           || (SELECT coalesce(array_agg(hybridsearch.tf_level_key(b.low, x.lexeme)), '{}')
               FROM unnest(t.lexemes, t.tfs) AS x(lexeme, tf),
                    unnest(t.tf_buckets[2:pg_catalog.width_bucket(x.tf, t.tf_buckets)])
                        AS b(low))
    FROM (SELECT coalesce(array_agg(u.lexeme), '{}') AS lexemes,
                 array_agg(u.tf) AS tfs,
                 hybridsearch.length_bucket(coalesce(sum(u.tf), 0)::integer) AS length_bucket,
                 hybridsearch.tf_buckets() AS tf_buckets
          FROM unnest(p_fts) AS u0,
               LATERAL (SELECT u0.lexeme,
                               coalesce(array_length(u0.positions, 1), 1) AS tf) AS u) AS t;
$$;

CREATE SEQUENCE hybridsearch.chunk_id_seq AS bigint;

CREATE TABLE hybridsearch.chunks (
    collection_id integer NOT NULL,
    chunk_id      bigint NOT NULL DEFAULT nextval('hybridsearch.chunk_id_seq'),
    document_id   bigint NOT NULL,
    tenant_id     text NOT NULL DEFAULT '',  -- the document's, copied for row-level security
    ordinal       integer NOT NULL CHECK (ordinal >= 0),
    content       text NOT NULL,
    -- The document's metadata, copied so filters run inside each retrieval branch.
    metadata      jsonb NOT NULL DEFAULT '{}',
    -- Untyped here; each partition pins the dimension with a CHECK constraint.
    embedding     vector NOT NULL,
    -- Full-text representation under the collection's analyzer (matching, phrases) ...
    fts           tsvector NOT NULL,
    -- ... and what BM25 derives from it: tf per term, the length, the impact keys.
    term_freqs    jsonb NOT NULL GENERATED ALWAYS AS (hybridsearch.term_freqs(fts)) STORED,
    term_count    integer NOT NULL GENERATED ALWAYS AS (hybridsearch.term_count(fts)) STORED,
    -- The keys are only ever matched whole, never ordered for a reader, so they compare
    -- bytewise: GIN sorts some 250 keys a chunk when it builds the index, and under a
    -- linguistic collation (even C.UTF-8 under libc) each comparison is a strcoll call.
    -- The index of 102k chunks' keys built in a third less time: 7.6 s against 11.4 s.
    -- Queries need no COLLATE: the default collation of their keys yields to this one.
    impacts       text[] COLLATE "C" NOT NULL
                  GENERATED ALWAYS AS (hybridsearch.impact_keys(fts)) STORED,
    -- collection_id is in every key (a Citus distribution column) but not first: inside
    -- a partition it is constant, and a leading constant column would let the planner
    -- answer "collection_id = $1 AND <GIN condition>" from these btrees when it
    -- underestimates the partition, e.g. before the first ANALYZE.
    PRIMARY KEY (chunk_id, collection_id),
    UNIQUE (document_id, ordinal, collection_id),
    FOREIGN KEY (collection_id, document_id)
        REFERENCES hybridsearch.documents (collection_id, document_id) ON DELETE CASCADE
) PARTITION BY LIST (collection_id);

ALTER SEQUENCE hybridsearch.chunk_id_seq OWNED BY hybridsearch.chunks.chunk_id;

-- term_freqs stays in the heap row, compressed, rather than moving to TOAST with the other
-- wide columns: exact BM25 reads it for every chunk it scores, and from TOAST that is one
-- more index probe and page per chunk (on a cold cache, a random read each). Partitions
-- inherit the setting.
ALTER TABLE hybridsearch.chunks ALTER COLUMN term_freqs SET STORAGE MAIN;

-- So do metadata and tenant_id, which every filtered search tests on each candidate row.
-- With toast_tuple_target = 128 (see hybridsearch.create_collection) any value of more
-- than about 24 bytes would otherwise go to TOAST: a filter {"percentile": 7} over 10,200
-- of 1M chunks read 42,800 buffers to test 1,900 heap pages.
ALTER TABLE hybridsearch.chunks
    ALTER COLUMN metadata SET STORAGE MAIN,
    ALTER COLUMN tenant_id SET STORAGE MAIN;

-- The search indexes (HNSW, full text, impact postings, metadata) belong to each
-- partition, not to the parent: hybridsearch.create_chunk_indexes makes them, and a bulk
-- load can drop and rebuild one collection's set without touching the others.

-- BM25 corpus statistics, kept exact and transactional by statement triggers on chunks.
-- Each writer updates the shard numbered by its backend pid, so concurrent ingests
-- touch different rows instead of serialising on one counter; readers sum the shards.
CREATE TABLE hybridsearch.collection_stats (
    collection_id integer NOT NULL
                  REFERENCES hybridsearch.collections (collection_id) ON DELETE CASCADE,
    shard         smallint NOT NULL,
    chunks        bigint NOT NULL,
    terms         bigint NOT NULL,
    -- Shortest and longest chunk ever added (deletes leave them): the range of length
    -- buckets a keyword search has to consider.
    min_terms     integer NOT NULL,
    max_terms     integer NOT NULL,
    PRIMARY KEY (collection_id, shard)
);

CREATE TABLE hybridsearch.term_stats (
    collection_id integer NOT NULL
                  REFERENCES hybridsearch.collections (collection_id) ON DELETE CASCADE,
    term          text NOT NULL,
    shard         smallint NOT NULL,
    -- number of chunks containing the term (document frequency, per shard)
    df            bigint NOT NULL,
    -- highest tf of the term in any chunk ever added (deletes leave it): bounds the
    -- impact tiers a keyword search has to consider
    max_tf        integer NOT NULL,
    PRIMARY KEY (collection_id, term, shard)
)
-- Every ingest batch updates the rows of thousands of terms. Half-empty pages let each
-- new row version stay on its page (a HOT update, no index entry), which halves the
-- statistics trigger's upsert time.
WITH (fillfactor = 50);

CREATE FUNCTION hybridsearch.stats_shard()
RETURNS smallint
LANGUAGE sql VOLATILE SECURITY INVOKER
AS $$
    SELECT (pg_catalog.pg_backend_pid() % 16)::smallint;
$$;

-- One function for both statement triggers: each names its transition table
-- changed_chunks, and TG_OP gives the sign. Lengths and max_tf are all-time bounds, so a
-- delete folds its chunks' values in with least/greatest like an insert: they were
-- counted when the chunks were added, so the bounds readers take over all shards stay
-- the same.
CREATE FUNCTION hybridsearch.count_changed_chunks()
RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER
AS $$
DECLARE
    v_sign integer := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    -- ORDER BY gives every writer the same lock order, so upserts cannot deadlock.
    INSERT INTO hybridsearch.collection_stats AS s
        (collection_id, shard, chunks, terms, min_terms, max_terms)
    SELECT c.collection_id, hybridsearch.stats_shard(), v_sign * count(*),
           v_sign * sum(c.term_count), min(c.term_count), max(c.term_count)
    FROM changed_chunks c
    GROUP BY c.collection_id
    ORDER BY c.collection_id
    ON CONFLICT (collection_id, shard) DO UPDATE
        SET chunks = s.chunks + EXCLUDED.chunks, terms = s.terms + EXCLUDED.terms,
            min_terms = least(s.min_terms, EXCLUDED.min_terms),
            max_terms = greatest(s.max_terms, EXCLUDED.max_terms);
    INSERT INTO hybridsearch.term_stats AS t (collection_id, term, shard, df, max_tf)
    SELECT c.collection_id, u.lexeme, hybridsearch.stats_shard(), v_sign * count(*),
           max(coalesce(array_length(u.positions, 1), 1))
    FROM changed_chunks c, unnest(c.fts) AS u
    GROUP BY c.collection_id, u.lexeme
    ORDER BY c.collection_id, u.lexeme
    ON CONFLICT (collection_id, term, shard) DO UPDATE
        SET df = t.df + EXCLUDED.df, max_tf = greatest(t.max_tf, EXCLUDED.max_tf);
    RETURN NULL;
END;
$$;

-- Chunks are only ever inserted or deleted (a changed document replaces its chunks).
CREATE TRIGGER chunks_count_inserted
    AFTER INSERT ON hybridsearch.chunks
    REFERENCING NEW TABLE AS changed_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION hybridsearch.count_changed_chunks();

CREATE TRIGGER chunks_count_deleted
    AFTER DELETE ON hybridsearch.chunks
    REFERENCING OLD TABLE AS changed_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION hybridsearch.count_changed_chunks();

CREATE FUNCTION hybridsearch.reject_chunk_update()
RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER
AS $$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'feature_not_supported',
        MESSAGE = 'chunks cannot be updated in place',
        HINT = 'Delete and re-insert them (re-add the document) so BM25 statistics stay exact.';
END;
$$;

CREATE TRIGGER chunks_reject_update
    BEFORE UPDATE OF content, fts ON hybridsearch.chunks
    FOR EACH ROW EXECUTE FUNCTION hybridsearch.reject_chunk_update();

-- Embeddings by model and chunk text, so re-ingesting or re-evaluating the same corpus
-- (into any collection) never embeds a chunk twice. model_key names the model and the
-- document prompt; text_hash is the SHA-256 of the chunk text.
CREATE TABLE hybridsearch.embedding_cache (
    model_key  text NOT NULL,
    text_hash  bytea NOT NULL,
    embedding  vector NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_key, text_hash)
);

-- Multi-tenancy: a role that neither owns these tables nor has BYPASSRLS sees only the
-- rows of the tenant named by the transaction-local setting hybridsearch.tenant_id
-- (set_config('hybridsearch.tenant_id', 'acme', true)), and nothing when it is unset,
-- so a tenant cannot leak across pooled connections. Owners (and the embedded
-- superuser) are not subject to these policies; see sql/roles.sql for the app role.
CREATE FUNCTION hybridsearch.current_tenant()
RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    SELECT nullif(pg_catalog.current_setting('hybridsearch.tenant_id', true), '');
$$;

ALTER TABLE hybridsearch.documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE hybridsearch.chunks ENABLE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON hybridsearch.documents
    USING (tenant_id = hybridsearch.current_tenant())
    WITH CHECK (tenant_id = hybridsearch.current_tenant());

CREATE POLICY tenant_isolation ON hybridsearch.chunks
    USING (tenant_id = hybridsearch.current_tenant())
    WITH CHECK (tenant_id = hybridsearch.current_tenant());
