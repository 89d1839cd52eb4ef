-- Collections and their chunk partitions and indexes; argument checks shared by
-- the searches; the tenant setting and the chunk-update guard.
--
-- The current source of these functions (see sql/README.md): edit here, and ship the
-- change in a new alembic revision.

CREATE OR REPLACE FUNCTION hybridsearch.reject_chunk_update()
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

-- Multi-tenancy: a role that neither owns these tables nor has BYPASSRLS sees only the
-- rows of the tenant named by the transaction-local setting hybridsearch.tenant_id
-- (set_config('hybridsearch.tenant_id', 'acme', true)), and nothing when it is unset,
-- so a tenant cannot leak across pooled connections. Owners (and the embedded
-- superuser) are not subject to these policies; see sql/roles.sql for the app role.
CREATE OR REPLACE FUNCTION hybridsearch.current_tenant()
RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    SELECT nullif(pg_catalog.current_setting('hybridsearch.tenant_id', true), '');
$$;

-- A chunk of a collection with its document's external id, looked up by key: what the
-- search functions return with each result. Called LATERAL once per result row; a SQL
-- function of one SELECT, so the planner inlines it (and OFFSET 0 keeps the lookup from
-- being flattened into a join: as a join the planner cannot tell how few rows a search
-- returns, and at 1M chunks it hashed all 51,000 documents, 11 ms of a 30 ms search).
CREATE OR REPLACE FUNCTION hybridsearch.chunk_source(p_collection_id integer, p_chunk_id bigint)
RETURNS TABLE (external_id text, content text, metadata jsonb)
LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    SELECT d.external_id, c.content, c.metadata
    FROM hybridsearch.chunks AS c
    JOIN hybridsearch.documents AS d
      ON d.collection_id = c.collection_id AND d.document_id = c.document_id
    WHERE c.collection_id = p_collection_id AND c.chunk_id = p_chunk_id
    OFFSET 0;
$$;

-- Look up a collection by name; raises no_data_found (P0002) when it does not exist.
CREATE OR REPLACE FUNCTION hybridsearch.get_collection(p_name text)
RETURNS hybridsearch.collections
LANGUAGE plpgsql STABLE SECURITY INVOKER
AS $$
DECLARE
    v_collection hybridsearch.collections;
BEGIN
    SELECT * INTO v_collection FROM hybridsearch.collections c WHERE c.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'no_data_found',
            MESSAGE = format('collection %L does not exist', p_name),
            HINT = 'Create it with hybridsearch.create_collection().';
    END IF;
    RETURN v_collection;
END;
$$;

-- The pgvector operator class and distance operator for a collection's distance.
CREATE OR REPLACE FUNCTION hybridsearch.distance_operator(p_distance text)
RETURNS text
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT CASE p_distance
        WHEN 'cosine' THEN '<=>'
        WHEN 'l2' THEN '<->'
        WHEN 'inner_product' THEN '<#>'
    END;
$$;

-- Create a collection and its chunk partition with a dimension check and its search
-- indexes.
CREATE OR REPLACE FUNCTION hybridsearch.create_collection(
    p_name text,
    p_embedding_model text,
    p_dimensions integer,
    p_distance text DEFAULT 'cosine',
    p_analyzer text DEFAULT 'mixed',
    p_settings jsonb DEFAULT '{}',
    p_bm25_k1 double precision DEFAULT 1.2,
    p_bm25_b double precision DEFAULT 0.75
)
RETURNS hybridsearch.collections
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_collection hybridsearch.collections;
    v_partition  text;
BEGIN
    BEGIN
        PERFORM hybridsearch.analyzer_config(p_analyzer);
    EXCEPTION WHEN undefined_object OR invalid_name OR null_value_not_allowed THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('unknown analyzer %L', p_analyzer),
            HINT = 'Use mixed (default), cjk, or a text search configuration such as english.';
    END;
    INSERT INTO hybridsearch.collections
        (name, embedding_model, dimensions, distance, analyzer, settings, bm25_k1, bm25_b)
    VALUES (p_name, p_embedding_model, p_dimensions, p_distance, p_analyzer,
            coalesce(p_settings, '{}'), p_bm25_k1, p_bm25_b)
    RETURNING * INTO v_collection;

    v_partition := 'chunks_' || v_collection.collection_id;
    EXECUTE format(
        -- toast_tuple_target keeps the heap rows narrow (text, tsvector, embedding and
        -- term_freqs go to TOAST), so the keyword search's posting visits, which read
        -- only term_count, touch few pages.
        'CREATE TABLE hybridsearch.%I PARTITION OF hybridsearch.chunks FOR VALUES IN (%s)'
        ' WITH (toast_tuple_target = 128)',
        v_partition, v_collection.collection_id);
    EXECUTE format(
        'ALTER TABLE hybridsearch.%I ADD CONSTRAINT %I CHECK (vector_dims(embedding) = %s)',
        v_partition, v_partition || '_dimensions', p_dimensions);
    PERFORM hybridsearch.create_chunk_indexes(p_name);
    RETURN v_collection;
END;
$$;

-- The search indexes of a chunk table (a collection's partition, or the table a re-embed
-- builds: sql/api/reembed.sql) for vectors of p_dimensions under p_distance and the HNSW
-- build parameters of p_settings: each index's name, whether it exists now, and the
-- statement that creates it.
CREATE OR REPLACE FUNCTION hybridsearch.chunk_table_index_definitions(
    p_table text,
    p_dimensions integer,
    p_distance text,
    p_settings jsonb
)
RETURNS TABLE (index_name text, present boolean, definition text)
LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    SELECT p_table || s.suffix,
           to_regclass(format('hybridsearch.%I', p_table || s.suffix)) IS NOT NULL,
           format('CREATE INDEX %I ON hybridsearch.%I ', p_table || s.suffix, p_table)
               || s.method
    FROM hybridsearch.hnsw_settings(p_settings) AS h
    CROSS JOIN LATERAL (VALUES
        ('_embedding_idx',
         format('USING hnsw ((embedding::vector(%s)) %s) WITH (m = %s, ef_construction = %s)',
                p_dimensions,
                CASE p_distance
                    WHEN 'cosine' THEN 'vector_cosine_ops'
                    WHEN 'l2' THEN 'vector_l2_ops'
                    WHEN 'inner_product' THEN 'vector_ip_ops'
                END,
                h.m, h.ef_construction)),
        ('_fts_idx', 'USING gin (fts)'),
        -- No pending list: a keyword search makes one lookup per impact tier, and each
        -- lookup would scan the whole unmerged pending list.
        ('_impacts_idx', 'USING gin (impacts) WITH (fastupdate = off)'),
        ('_metadata_idx', 'USING gin (metadata jsonb_path_ops)')
    ) AS s(suffix, method);
$$;

-- The search indexes of one collection's partition, whether each exists now, and the
-- statement that creates it. Building them after a bulk load is several times cheaper
-- than maintaining them row by row during it.
CREATE OR REPLACE FUNCTION hybridsearch.chunk_index_definitions(p_name text)
RETURNS TABLE (index_name text, present boolean, definition text)
LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    SELECT d.index_name, d.present, d.definition
    FROM hybridsearch.collections c
    CROSS JOIN LATERAL hybridsearch.chunk_table_index_definitions(
        'chunks_' || c.collection_id, c.dimensions, c.distance, c.settings) AS d
    WHERE c.name = p_name;
$$;

-- Create whichever of a collection's search indexes are missing; how many were built.
-- Idempotent: run it after a bulk load, or again after one that was interrupted. A new
-- HNSW index gets its ef_search calibrated (hybridsearch.calibrate_ef_search, on 50
-- queries: a few percent of the build's time), since what it reaches depends on the build.
CREATE OR REPLACE FUNCTION hybridsearch.create_chunk_indexes(p_name text)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_index record;
    v_built integer := 0;
    v_new_graph boolean := false;
BEGIN
    PERFORM hybridsearch.get_collection(p_name);  -- raises for an unknown name
    FOR v_index IN
        SELECT * FROM hybridsearch.chunk_index_definitions(p_name) AS d WHERE NOT d.present
    LOOP
        EXECUTE v_index.definition;
        v_built := v_built + 1;
        v_new_graph := v_new_graph OR v_index.index_name LIKE '%\_embedding\_idx';
    END LOOP;
    IF v_new_graph THEN
        PERFORM hybridsearch.calibrate_ef_search(p_name, p_queries => 50);
    END IF;
    RETURN v_built;
END;
$$;

-- Drop a collection's search indexes before a bulk load; how many were dropped. Searches
-- stay correct without them (exact scans), only slower, until create_chunk_indexes.
CREATE OR REPLACE FUNCTION hybridsearch.drop_chunk_indexes(p_name text)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_index record;
    v_dropped integer := 0;
BEGIN
    PERFORM hybridsearch.get_collection(p_name);  -- raises for an unknown name
    FOR v_index IN
        SELECT * FROM hybridsearch.chunk_index_definitions(p_name) AS d WHERE d.present
    LOOP
        EXECUTE format('DROP INDEX hybridsearch.%I', v_index.index_name);
        v_dropped := v_dropped + 1;
    END LOOP;
    RETURN v_dropped;
END;
$$;

-- Drop a collection with all its documents and chunks; false when it did not exist.
CREATE OR REPLACE FUNCTION hybridsearch.drop_collection(p_name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_id integer;
    v_synced text;
BEGIN
    SELECT collection_id INTO v_id FROM hybridsearch.collections WHERE name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- A synced table keeps writing into the collection (its foreign key would refuse the
    -- delete too, in words that do not say what to do).
    SELECT format('%I.%I', t.table_schema, t.table_name) INTO v_synced
    FROM hybridsearch.synced_tables AS t WHERE t.collection_id = v_id
    ORDER BY t.sync_id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'object_in_use',
            MESSAGE = format('collection %L is kept in step with table %s; remove that first'
                             ' (hybridsearch sync remove --collection %s --table %s)',
                             p_name, v_synced, p_name, v_synced);
    END IF;
    -- Dropping the partitions (and a re-embedding left behind) is far cheaper than
    -- cascading row by row.
    EXECUTE format('DROP TABLE IF EXISTS hybridsearch.%I', 'chunks_' || v_id || '_reembed');
    EXECUTE format('DROP TABLE IF EXISTS hybridsearch.%I', 'chunks_' || v_id);
    DELETE FROM hybridsearch.collections WHERE collection_id = v_id;
    RETURN true;
END;
$$;

-- Reject a top_k outside 1..1000 (the planner and ef_search both need a bound).
CREATE OR REPLACE FUNCTION hybridsearch.check_top_k(p_top_k integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SECURITY INVOKER
AS $$
BEGIN
    IF p_top_k IS NULL OR p_top_k < 1 OR p_top_k > 1000 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('top_k must be between 1 and 1000, got %s', coalesce(p_top_k::text, 'NULL'));
    END IF;
END;
$$;

-- Reject a filter that is not a JSON object.
CREATE OR REPLACE FUNCTION hybridsearch.check_filter(p_filter jsonb)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SECURITY INVOKER
AS $$
BEGIN
    IF p_filter IS NOT NULL AND jsonb_typeof(p_filter) <> 'object' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('filter must be a JSON object, got %s', jsonb_typeof(p_filter)),
            HINT = 'Pass e.g. {"lang": "en"}; chunks match when their metadata contains it.';
    END IF;
END;
$$;

-- How many chunks of a collection the planner expects to match a metadata filter and a
-- tenant (either may be NULL), from the column statistics: a plan, not a count. VOLATILE
-- because EXPLAIN is not allowed in a non-volatile function; it reads nothing.
CREATE OR REPLACE FUNCTION hybridsearch.estimated_matches(
    p_collection_id integer,
    p_filter jsonb,
    p_tenant text
)
RETURNS double precision
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_plan jsonb;
BEGIN
    EXECUTE 'EXPLAIN (FORMAT JSON) SELECT FROM hybridsearch.chunks AS c'
            ' WHERE c.collection_id = $1'
            || CASE WHEN p_filter IS NOT NULL THEN ' AND c.metadata @> $2' ELSE '' END
            || CASE WHEN p_tenant IS NOT NULL THEN ' AND c.tenant_id = $3' ELSE '' END
    INTO v_plan USING p_collection_id, p_filter, p_tenant;
    RETURN (v_plan -> 0 -> 'Plan' ->> 'Plan Rows')::double precision;
END;
$$;
