-- The HNSW index of a collection: its build parameters, its rebuild, and the ef_search
-- its searches run with.
--
-- The current source of these functions (see sql/README.md): edit here, and ship the
-- change in a new alembic revision.

-- The HNSW parameters of a collection, from its settings (hybridsearch.collections.settings,
-- written by the Python CollectionSettings): m and ef_construction build its index
-- (chunk_index_definitions), ef_search is what vector_topk walks the graph with before
-- raising it to the TopK. A setting left out is the default declared in
-- hybridsearch/params.py (HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH; tests hold the two
-- to each other). ef_search is normally set by calibrate_ef_search, per collection, from
-- the recall its own index reaches: the same ef_search finds more of the true neighbours
-- in one build than in another, so no constant fits every collection.
CREATE OR REPLACE FUNCTION hybridsearch.hnsw_settings(p_settings jsonb)
RETURNS TABLE (m integer, ef_construction integer, ef_search integer)
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT coalesce((p_settings ->> 'hnsw_m')::integer, 16),
           coalesce((p_settings ->> 'hnsw_ef_construction')::integer, 64),
           coalesce((p_settings ->> 'hnsw_ef_search')::integer, 200);
$$;

-- Drop and build again a collection's HNSW index, with the parameters its settings name
-- now (change them first in hybridsearch.collections.settings or through the Python
-- API); create_chunk_indexes then calibrates its ef_search. Writes to the collection wait
-- for the build; searches of it wait for the transaction to commit, as for any DROP
-- INDEX. Returns the ef_search the collection now searches with.
CREATE OR REPLACE FUNCTION hybridsearch.rebuild_vector_index(p_name text)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_collection hybridsearch.collections := hybridsearch.get_collection(p_name);
BEGIN
    EXECUTE format('DROP INDEX IF EXISTS hybridsearch.%I',
                   'chunks_' || v_collection.collection_id || '_embedding_idx');
    PERFORM hybridsearch.create_chunk_indexes(p_name);
    RETURN (SELECT h.ef_search
            FROM hybridsearch.collections AS c,
                 hybridsearch.hnsw_settings(c.settings) AS h
            WHERE c.collection_id = v_collection.collection_id);
END;
$$;

-- Measure the recall@10 of a collection's HNSW index against exact search, at a ladder of
-- ef_search values, and keep the smallest that reaches p_target_recall in the collection's
-- settings (hnsw_ef_search), which vector_topk then walks with. Returns one row per value
-- tried, up to the one chosen (chosen = true); when none reaches the target, the largest
-- is kept and no row is chosen.
--
-- The queries are p_queries of the collection's own chunks, drawn by a hash of their ids
-- (the same sample every run), each looking for its nearest other chunks: the chunk
-- itself is left out of both the exact and the HNSW list. They are in the distribution of
-- the index, as queries embedded by the same model are near it. The exact lists come from
-- a sequential scan (ORDER BY an expression the index cannot serve), one per query:
-- at 1M chunks the calibration costs about as many seconds as it has queries, a few
-- percent of the index build it follows. A collection with fewer chunks than 10 plus one
-- has no recall to measure: nothing is changed and nothing returned.
CREATE OR REPLACE FUNCTION hybridsearch.calibrate_ef_search(
    p_name text,
    p_target_recall double precision DEFAULT 0.98,  -- params.HNSW_TARGET_RECALL
    p_queries integer DEFAULT 100  -- params.HNSW_CALIBRATION_QUERIES
)
RETURNS TABLE (ef_search integer, recall double precision, mean_ms double precision,
               chosen boolean)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
-- Function-level SET scopes the set_config() calls below to this function. The scan is
-- vector_topk's, kept on the index below even where the planner would rather sort a
-- small partition (the exact lists cannot use the index at all).
SET hnsw.ef_search = 40
SET hnsw.iterative_scan = 'relaxed_order'
SET enable_seqscan = on
AS $$
DECLARE
    v_collection hybridsearch.collections := hybridsearch.get_collection(p_name);
    -- pgvector's default, then about 1.6x a step, to its ceiling
    v_ladder constant integer[] := ARRAY[40, 64, 100, 160, 200, 320, 500, 800, 1000];
    v_k constant integer := 10;
    v_partition text := 'chunks_' || v_collection.collection_id;
    v_distance text;
    v_query record;
    v_ef integer;
    v_found bigint[];
    v_hits bigint := 0;
    v_started timestamptz;
    v_elapsed double precision;
    v_queries integer;
BEGIN
    IF p_target_recall IS NULL OR NOT p_target_recall BETWEEN 0 AND 1 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('target_recall must be a finite number between 0 and 1, got %s',
                             coalesce(p_target_recall::text, 'NULL'));
    END IF;
    IF p_queries IS NULL OR NOT p_queries BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('queries must be an integer between 1 and 10000, got %s',
                             coalesce(p_queries::text, 'NULL'));
    END IF;
    v_distance := format('c.embedding::vector(%1$s) %2$s $1::vector(%1$s)',
                         v_collection.dimensions,
                         hybridsearch.distance_operator(v_collection.distance));

    -- The sample and each query's exact neighbours (itself excluded).
    CREATE TEMPORARY TABLE IF NOT EXISTS hybridsearch_calibration (
        query_id bigint NOT NULL, embedding vector NOT NULL, exact bigint[] NOT NULL
    ) ON COMMIT DROP;
    TRUNCATE hybridsearch_calibration;
    INSERT INTO hybridsearch_calibration (query_id, embedding, exact)
    SELECT c.chunk_id, c.embedding, '{}'
    FROM hybridsearch.chunks AS c
    WHERE c.chunk_id IN (
        SELECT s.chunk_id FROM hybridsearch.chunks AS s
        WHERE s.collection_id = v_collection.collection_id
        ORDER BY hashint8(s.chunk_id), s.chunk_id
        LIMIT p_queries
    ) AND c.collection_id = v_collection.collection_id;
    GET DIAGNOSTICS v_queries = ROW_COUNT;
    IF v_queries = 0 OR (SELECT count(*) FROM hybridsearch.chunks AS c
                         WHERE c.collection_id = v_collection.collection_id) <= v_k THEN
        RETURN;
    END IF;
    PERFORM set_config('enable_seqscan', 'on', true);
    FOR v_query IN SELECT q.query_id, q.embedding FROM hybridsearch_calibration AS q LOOP
        -- "+ 0" keeps the planner off the index: these are the true neighbours.
        EXECUTE format(
            $sql$
            SELECT array_agg(n.chunk_id ORDER BY n.distance, n.chunk_id) FROM (
                SELECT c.chunk_id, (%1$s) + 0 AS distance
                FROM hybridsearch.%2$I AS c
                WHERE c.chunk_id <> $2
                ORDER BY (%1$s) + 0, c.chunk_id
                LIMIT %3$s
            ) AS n
            $sql$, v_distance, v_partition, v_k)
        INTO v_found USING v_query.embedding, v_query.query_id;
        UPDATE hybridsearch_calibration AS q SET exact = v_found
        WHERE q.query_id = v_query.query_id;
    END LOOP;

    -- The collection's partition has no other index that can order by distance.
    PERFORM set_config('enable_seqscan', 'off', true);
    FOREACH v_ef IN ARRAY v_ladder LOOP
        PERFORM set_config('hnsw.ef_search', v_ef::text, true);
        v_hits := 0;
        v_started := clock_timestamp();
        FOR v_query IN SELECT q.query_id, q.embedding, q.exact FROM hybridsearch_calibration AS q
        LOOP
            -- vector_topk's index scan; one row more, for the query chunk itself.
            EXECUTE format(
                $sql$
                SELECT array_agg(n.chunk_id) FROM (
                    SELECT c.chunk_id FROM hybridsearch.%2$I AS c
                    ORDER BY %1$s
                    LIMIT %3$s
                ) AS n
                $sql$, v_distance, v_partition, v_k + 1)
            INTO v_found USING v_query.embedding;
            v_hits := v_hits + (
                SELECT count(*) FROM unnest(v_query.exact) AS e(id)
                WHERE e.id = ANY (array_remove(v_found, v_query.query_id)));
        END LOOP;
        v_elapsed := extract(epoch FROM clock_timestamp() - v_started) * 1000 / v_queries;
        ef_search := v_ef;
        recall := v_hits::double precision / (v_queries * v_k);
        mean_ms := v_elapsed;
        chosen := recall >= p_target_recall;
        IF chosen OR v_ef = v_ladder[array_upper(v_ladder, 1)] THEN
            UPDATE hybridsearch.collections AS c
            SET settings = c.settings || jsonb_build_object('hnsw_ef_search', v_ef)
            WHERE c.collection_id = v_collection.collection_id;
            RETURN NEXT;
            RETURN;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
