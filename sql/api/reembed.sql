-- Re-embedding a collection with another model (other dimensions allowed): the new
-- vectors and their search indexes are built in a table beside the collection's partition
-- while searches and writes go on as before, then swapped in by one transaction.
--
-- The steps (hybridsearch/db/reembed_async.py runs them; a SQL user can too):
--   1. start_reembed: the table chunks_<id>_reembed, shaped like a partition, its model
--      and dimensions in its comment. Called again with the same model key, it resumes.
--   2. reembed_pending / reembed_write: the chunks the table lacks, and their new vectors
--      (the caller embeds them); reembed_prune: rows whose chunk is gone. Repeat until
--      nothing is pending: documents added or deleted meanwhile are caught up.
--   3. reembed_build_indexes: the search indexes, under their final names' suffixes.
--   4. In one transaction: lock_for_reembed (writes to every collection wait; searches go
--      on), a last prune and catch-up, then switch_reembed: the partition is detached and
--      dropped, the new table attached and renamed, the collection row names the new
--      model. Searches wait only for this switch.
--
-- The current source of these functions (see sql/README.md): edit here, and ship the
-- change in a new alembic revision.

-- The table a re-embed of collection p_collection_id builds.
CREATE OR REPLACE FUNCTION hybridsearch.reembed_table(p_collection_id integer)
RETURNS text
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT 'chunks_' || p_collection_id || '_reembed';
$$;

-- The re-embed of a collection under way: its table and what its comment records (model,
-- dimensions, model key); raises when none is.
CREATE OR REPLACE FUNCTION hybridsearch.reembed_state(p_name text)
RETURNS TABLE (collection_id integer, table_name text, model text, dimensions integer,
               model_key text)
LANGUAGE plpgsql STABLE SECURITY INVOKER
AS $$
DECLARE
    v_collection hybridsearch.collections := hybridsearch.get_collection(p_name);
    v_table text := hybridsearch.reembed_table(v_collection.collection_id);
    v_state jsonb;
BEGIN
    v_state := obj_description(to_regclass(format('hybridsearch.%I', v_table)), 'pg_class')::jsonb;
    IF v_state IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('no re-embed of collection %L is under way', p_name),
            HINT = 'Start one with hybridsearch.start_reembed().';
    END IF;
    RETURN QUERY SELECT v_collection.collection_id, v_table, v_state ->> 'model',
                        (v_state ->> 'dimensions')::integer, v_state ->> 'model_key';
END;
$$;

-- Create the table a re-embed fills, or keep the one an interrupted re-embed with the
-- same model key left (true: resumed). A leftover of another model is dropped.
CREATE OR REPLACE FUNCTION hybridsearch.start_reembed(
    p_name text,
    p_model text,
    p_dimensions integer,
    p_model_key text
)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_collection hybridsearch.collections := hybridsearch.get_collection(p_name);
    v_id integer := v_collection.collection_id;
    v_table text := hybridsearch.reembed_table(v_id);
    v_state jsonb;
BEGIN
    IF p_dimensions IS NULL OR NOT p_dimensions BETWEEN 1 AND 2000 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('dimensions must be between 1 and 2000, got %s',
                             coalesce(p_dimensions::text, 'NULL'));
    END IF;
    IF coalesce(p_model, '') = '' OR coalesce(p_model_key, '') = '' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'a re-embed needs a model name and a model key';
    END IF;
    IF p_model = v_collection.embedding_model THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('collection %L already uses embedding model %L', p_name, p_model),
            HINT = 'Save a retrained model to a new folder and re-embed with that folder.';
    END IF;
    v_state := obj_description(to_regclass(format('hybridsearch.%I', v_table)), 'pg_class')::jsonb;
    IF v_state IS NOT NULL AND v_state ->> 'model_key' = p_model_key
       AND (v_state ->> 'dimensions')::integer = p_dimensions THEN
        RETURN true;
    END IF;
    EXECUTE format('DROP TABLE IF EXISTS hybridsearch.%I', v_table);
    -- Shaped like a partition (columns, generated columns, storage, checks, keys), and
    -- with the partition's bound as a CHECK, so that attaching it scans nothing.
    EXECUTE format(
        'CREATE TABLE hybridsearch.%I (LIKE hybridsearch.chunks INCLUDING DEFAULTS'
        ' INCLUDING GENERATED INCLUDING STORAGE INCLUDING CONSTRAINTS INCLUDING INDEXES)'
        ' WITH (toast_tuple_target = 128)', v_table);
    EXECUTE format('ALTER TABLE hybridsearch.%I ADD CONSTRAINT %I CHECK (collection_id = %s)',
                   v_table, v_table || '_bound', v_id);
    EXECUTE format(
        'ALTER TABLE hybridsearch.%I ADD CONSTRAINT %I CHECK (vector_dims(embedding) = %s)',
        v_table, 'chunks_' || v_id || '_dimensions', p_dimensions);
    -- The partitions' own foreign key: a document deleted meanwhile takes its rows here too.
    EXECUTE format(
        'ALTER TABLE hybridsearch.%I ADD FOREIGN KEY (collection_id, document_id)'
        ' REFERENCES hybridsearch.documents (collection_id, document_id) ON DELETE CASCADE',
        v_table);
    EXECUTE format('COMMENT ON TABLE hybridsearch.%I IS %L', v_table,
                   jsonb_build_object('model', p_model, 'dimensions', p_dimensions,
                                      'model_key', p_model_key)::text);
    RETURN false;
END;
$$;

-- Up to p_limit of the collection's chunks after chunk p_after that the re-embed lacks, by
-- chunk id: what to embed next.
CREATE OR REPLACE FUNCTION hybridsearch.reembed_pending(
    p_name text,
    p_after bigint DEFAULT 0,
    p_limit integer DEFAULT 256
)
RETURNS TABLE (chunk_id bigint, content text)
LANGUAGE plpgsql STABLE SECURITY INVOKER
AS $$
DECLARE
    v_state record;
BEGIN
    SELECT * INTO v_state FROM hybridsearch.reembed_state(p_name);
    RETURN QUERY EXECUTE format(
        $sql$
        SELECT c.chunk_id, c.content FROM hybridsearch.chunks AS c
        WHERE c.collection_id = $1 AND c.chunk_id > $2
          AND NOT EXISTS (SELECT FROM hybridsearch.%I AS s
                          WHERE s.chunk_id = c.chunk_id AND s.collection_id = $1)
        ORDER BY c.chunk_id
        LIMIT $3
        $sql$, v_state.table_name)
    USING v_state.collection_id, coalesce(p_after, 0), p_limit;
END;
$$;

-- Store the new vectors of chunks (as they are in the collection now); how many rows were
-- written. A chunk deleted meanwhile, or already written, is skipped.
CREATE OR REPLACE FUNCTION hybridsearch.reembed_write(
    p_name text,
    p_chunk_ids bigint[],
    p_embeddings vector[]
)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_state record;
    v_written integer;
BEGIN
    SELECT * INTO v_state FROM hybridsearch.reembed_state(p_name);
    IF cardinality(p_chunk_ids) IS DISTINCT FROM cardinality(p_embeddings) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('%s chunk ids but %s embeddings', cardinality(p_chunk_ids),
                             cardinality(p_embeddings));
    END IF;
    EXECUTE format(
        $sql$
        INSERT INTO hybridsearch.%I (collection_id, chunk_id, document_id, tenant_id, ordinal,
                                     content, metadata, embedding, fts)
        SELECT c.collection_id, c.chunk_id, c.document_id, c.tenant_id, c.ordinal,
               c.content, c.metadata, v.embedding, c.fts
        FROM unnest($2::bigint[], $3::vector[]) AS v(chunk_id, embedding)
        JOIN hybridsearch.chunks AS c ON c.collection_id = $1 AND c.chunk_id = v.chunk_id
        ON CONFLICT DO NOTHING
        $sql$, v_state.table_name)
    USING v_state.collection_id, p_chunk_ids, p_embeddings;
    GET DIAGNOSTICS v_written = ROW_COUNT;
    RETURN v_written;
END;
$$;

-- Delete the re-embed's rows whose chunk the collection no longer has (a document changed
-- or deleted meanwhile); how many.
CREATE OR REPLACE FUNCTION hybridsearch.reembed_prune(p_name text)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_state record;
    v_pruned integer;
BEGIN
    SELECT * INTO v_state FROM hybridsearch.reembed_state(p_name);
    EXECUTE format(
        $sql$
        DELETE FROM hybridsearch.%I AS s
        WHERE NOT EXISTS (SELECT FROM hybridsearch.chunks AS c
                          WHERE c.collection_id = $1 AND c.chunk_id = s.chunk_id)
        $sql$, v_state.table_name)
    USING v_state.collection_id;
    GET DIAGNOSTICS v_pruned = ROW_COUNT;
    RETURN v_pruned;
END;
$$;

-- Build the re-embed's missing search indexes (the collection's set, for the new
-- dimensions) and refresh its planner statistics; how many were built.
CREATE OR REPLACE FUNCTION hybridsearch.reembed_build_indexes(p_name text)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_collection hybridsearch.collections := hybridsearch.get_collection(p_name);
    v_state record;
    v_index record;
    v_built integer := 0;
BEGIN
    SELECT * INTO v_state FROM hybridsearch.reembed_state(p_name);
    FOR v_index IN
        SELECT * FROM hybridsearch.chunk_table_index_definitions(
            v_state.table_name, v_state.dimensions, v_collection.distance,
            v_collection.settings) AS d
        WHERE NOT d.present
    LOOP
        EXECUTE v_index.definition;
        v_built := v_built + 1;
    END LOOP;
    EXECUTE format('ANALYZE hybridsearch.%I', v_state.table_name);
    RETURN v_built;
END;
$$;

-- The lock a switch holds from its last catch-up to its commit: writes to chunks (of any
-- collection) wait, searches go on. Take it first in the switch's transaction.
CREATE OR REPLACE FUNCTION hybridsearch.lock_for_reembed()
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
BEGIN
    LOCK TABLE ONLY hybridsearch.chunks IN SHARE MODE;
END;
$$;

-- What a write of chunks takes first: the lock a switch waits for, then the collection's
-- model as it is now. A writer that embedded with another model has raced a switch and
-- must embed again; after this call no switch can commit before its transaction ends.
CREATE OR REPLACE FUNCTION hybridsearch.lock_embedding_model(p_collection_id integer)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_model text;
BEGIN
    LOCK TABLE ONLY hybridsearch.chunks IN ROW EXCLUSIVE MODE;
    SELECT c.embedding_model INTO v_model
    FROM hybridsearch.collections AS c WHERE c.collection_id = p_collection_id;
    RETURN v_model;
END;
$$;

-- The switch: in the transaction of lock_for_reembed and of the last catch-up, swap the
-- re-embedded table in for the collection's partition and record the new model and
-- dimensions. Refuses while a chunk is missing or stale, or an index is not built. The
-- HNSW ef_search calibrated for the old graph is forgotten (searches walk the default
-- until hybridsearch.calibrate_ef_search measures the new one). Searches of every
-- collection wait for this transaction's commit (DETACH PARTITION's lock).
CREATE OR REPLACE FUNCTION hybridsearch.switch_reembed(p_name text)
RETURNS hybridsearch.collections
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_collection hybridsearch.collections := hybridsearch.get_collection(p_name);
    v_state record;
    v_partition text := 'chunks_' || v_collection.collection_id;
    v_index record;
BEGIN
    PERFORM hybridsearch.lock_for_reembed();
    SELECT * INTO v_state FROM hybridsearch.reembed_state(p_name);
    IF EXISTS (SELECT FROM hybridsearch.reembed_pending(p_name, 0, 1))
       OR hybridsearch.reembed_prune(p_name) > 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('the re-embed of %L has not caught up with the collection', p_name),
            HINT = 'In the switch''s transaction, after lock_for_reembed(), write what'
                   ' reembed_pending() returns.';
    END IF;
    IF EXISTS (SELECT FROM hybridsearch.chunk_table_index_definitions(
                   v_state.table_name, v_state.dimensions, v_collection.distance,
                   v_collection.settings) AS d WHERE NOT d.present) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('the re-embed of %L has no search indexes yet', p_name),
            HINT = 'Build them with hybridsearch.reembed_build_indexes().';
    END IF;
    EXECUTE format('ALTER TABLE hybridsearch.chunks DETACH PARTITION hybridsearch.%I',
                   v_partition);
    EXECUTE format('DROP TABLE hybridsearch.%I', v_partition);
    EXECUTE format('ALTER TABLE hybridsearch.chunks ATTACH PARTITION hybridsearch.%I'
                   ' FOR VALUES IN (%s)', v_state.table_name, v_collection.collection_id);
    EXECUTE format('ALTER TABLE hybridsearch.%I DROP CONSTRAINT %I',
                   v_state.table_name, v_state.table_name || '_bound');
    EXECUTE format('ALTER TABLE hybridsearch.%I RENAME TO %I', v_state.table_name, v_partition);
    EXECUTE format('COMMENT ON TABLE hybridsearch.%I IS NULL', v_partition);
    -- The indexes keep the names create_chunk_indexes and drop_chunk_indexes look for.
    FOR v_index IN
        SELECT i.relname FROM pg_catalog.pg_index AS x
        JOIN pg_catalog.pg_class AS i ON i.oid = x.indexrelid
        WHERE x.indrelid = format('hybridsearch.%I', v_partition)::regclass
          AND starts_with(i.relname, v_state.table_name)
    LOOP
        EXECUTE format('ALTER INDEX hybridsearch.%I RENAME TO %I', v_index.relname,
                       v_partition || substr(v_index.relname, length(v_state.table_name) + 1));
    END LOOP;
    UPDATE hybridsearch.collections AS c
    SET embedding_model = v_state.model,
        dimensions = v_state.dimensions,
        settings = c.settings - 'hnsw_ef_search'
    WHERE c.collection_id = v_collection.collection_id
    RETURNING * INTO v_collection;
    RETURN v_collection;
END;
$$;

-- Give up a re-embed under way: its table is dropped; false when there was none.
CREATE OR REPLACE FUNCTION hybridsearch.cancel_reembed(p_name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_table text := hybridsearch.reembed_table((hybridsearch.get_collection(p_name)).collection_id);
BEGIN
    IF to_regclass(format('hybridsearch.%I', v_table)) IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TABLE hybridsearch.%I', v_table);
    RETURN true;
END;
$$;
