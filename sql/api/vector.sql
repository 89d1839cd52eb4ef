-- Vector TopK.
--
-- The current source of these functions (see sql/README.md): edit here, and ship the
-- change in a new alembic revision.

-- Vector TopK as SQL users call it: vector_topk's chunks, each with the external id of
-- its document (document_id: the id the document was added with, as search_hybrid
-- returns it), so that a caller needs no join to the internal ids.
--
-- The document is looked up by key for each returned chunk (chunk_source). It reads
-- chunks and documents as the caller, under row-level security like vector_topk, so a tenant
-- sees only its own documents.
-- search_hybrid calls vector_topk itself, which has no use for the lookup.
CREATE OR REPLACE FUNCTION hybridsearch.search_vector(
    p_collection text,
    p_embedding vector,
    p_top_k integer DEFAULT 50,
    p_filter jsonb DEFAULT NULL
)
RETURNS TABLE (
    chunk_id bigint,
    document_id text,
    vector_rank integer,
    vector_distance double precision
)
LANGUAGE plpgsql STABLE SECURITY INVOKER
AS $$
DECLARE
    v_collection hybridsearch.collections := hybridsearch.get_collection(p_collection);
BEGIN
    RETURN QUERY
    SELECT v.chunk_id, x.external_id, v.vector_rank, v.vector_distance
    FROM hybridsearch.vector_topk(p_collection, p_embedding, p_top_k, p_filter) AS v
    CROSS JOIN LATERAL hybridsearch.chunk_source(v_collection.collection_id, v.chunk_id) AS x
    ORDER BY v.vector_rank;
END;
$$;

-- Vector TopK by internal id (search_vector and search_hybrid call it): the p_top_k
-- chunks nearest to p_embedding, optionally restricted to chunks whose metadata contains
-- p_filter, and always to the transaction's tenant when one is set
-- (hybridsearch.current_tenant()).
--
-- Unfiltered, and for filters the planner expects to keep many chunks (below), it reads
-- the collection's HNSW index with an iterative scan, so filters still yield K rows.
-- Invariants: ef_search >= p_top_k (pgvector returns at most ef_search rows), and at
-- least the collection's own ef_search (hnsw_settings): recall@10 against exact search
-- depends on the build of the graph, so calibrate_ef_search measures it on the
-- collection's index after a build and keeps the smallest value that reaches its target
-- (200 until then, well above pgvector's default of 40). The scan is relaxed-order,
-- since this function sorts what it returns; that keeps more of the exact filtered top K
-- than strict order, at the same speed.
--
-- A selective filter starves the graph walk: to find K of M matching chunks among N it
-- reads about K N / M neighbours, and misses many of the nearest. An exact search instead
-- ranks the M matching chunks, found through the metadata index, by distance: it costs
-- about a fifth of a neighbour a chunk, so it is the cheaper where M < 2.2 sqrt(K N). It
-- is taken where the planner expects M <= 3 sqrt(K N) (a margin for its exact results),
-- and at most 20,000 (so a 10 % filter on 100k chunks still walks the graph, which is
-- faster there); if the estimate was wrong, it stops after 20,000 chunks and the HNSW
-- scan runs after all.
CREATE OR REPLACE FUNCTION hybridsearch.vector_topk(
    p_collection text,
    p_embedding vector,
    p_top_k integer DEFAULT 50,
    p_filter jsonb DEFAULT NULL
)
RETURNS TABLE (chunk_id bigint, vector_rank integer, vector_distance double precision)
LANGUAGE plpgsql STABLE SECURITY INVOKER
-- Function-level SET scopes the set_config() calls below to this function.
SET hnsw.ef_search = 200
SET hnsw.iterative_scan = 'relaxed_order'
AS $$
DECLARE
    v_collection hybridsearch.collections := hybridsearch.get_collection(p_collection);
    v_filtered   boolean := p_filter IS NOT NULL AND p_filter <> '{}'::jsonb;
    v_tenant     text := hybridsearch.current_tenant();
    v_exact_limit constant integer := 20000;  -- most matching chunks to rank exactly
    v_conditions text;   -- the filter and tenant conditions, on chunks c
    v_distance   text;   -- the distance of c.embedding to the query, as SQL
    v_chunks     double precision;
    v_matching   bigint;
    v_ids        bigint[];
    v_distances  double precision[];
BEGIN
    PERFORM hybridsearch.check_top_k(p_top_k);
    PERFORM hybridsearch.check_filter(p_filter);
    IF p_embedding IS NULL OR vector_dims(p_embedding) <> v_collection.dimensions THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('query embedding has %s dimensions; collection %L expects %s',
                             coalesce(vector_dims(p_embedding)::text, 'no'),
                             v_collection.name, v_collection.dimensions),
            HINT = format('Embed the query with %s.', v_collection.embedding_model);
    END IF;
    -- pgvector computes distances in float32: a vector longer than 1e18 overflows them,
    -- and one shorter than 1e-18 has no cosine distance (NaN), so neither ranks anything.
    IF vector_norm(p_embedding) > 1e18
       OR (v_collection.distance = 'cosine' AND vector_norm(p_embedding) < 1e-18) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('query embedding has length %s, outside what %s distance can rank',
                             vector_norm(p_embedding), v_collection.distance),
            HINT = 'Check the embedding model''s output; a normalised vector has length 1.';
    END IF;
    v_conditions := format('c.collection_id = %s', v_collection.collection_id)
        || CASE WHEN v_filtered THEN ' AND c.metadata @> $2' ELSE '' END
        -- explicit as well as by row-level security, for roles that bypass the policies
        || CASE WHEN v_tenant IS NOT NULL THEN ' AND c.tenant_id = $4' ELSE '' END;
    v_distance := format('c.embedding::vector(%1$s) %2$s $1::vector(%1$s)',
                         v_collection.dimensions,
                         hybridsearch.distance_operator(v_collection.distance));

    IF v_filtered THEN
        SELECT sum(s.chunks) INTO v_chunks
        FROM hybridsearch.collection_stats AS s
        WHERE s.collection_id = v_collection.collection_id;
        IF hybridsearch.estimated_matches(v_collection.collection_id, p_filter, v_tenant)
           <= least(v_exact_limit, 3 * sqrt(p_top_k * coalesce(v_chunks, 0))) THEN
            -- The matching chunks, up to one past the limit (their embeddings as TOAST
            -- pointers, read only for the distances); ranked only within it.
            EXECUTE format(
                $sql$
                WITH matching AS MATERIALIZED (
                    SELECT c.chunk_id, c.embedding
                    FROM hybridsearch.chunks AS c
                    WHERE %2$s
                    LIMIT %3$s + 1
                ),
                matched AS (SELECT count(*) AS n FROM matching),
                nearest AS (
                    SELECT c.chunk_id, %1$s AS distance
                    FROM matching AS c
                    WHERE (SELECT matched.n FROM matched) <= %3$s
                    ORDER BY distance, c.chunk_id
                    LIMIT $3
                )
                SELECT (SELECT matched.n FROM matched),
                       array_agg(n.chunk_id ORDER BY n.distance, n.chunk_id),
                       array_agg(n.distance ORDER BY n.distance, n.chunk_id)
                FROM nearest AS n
                $sql$,
                v_distance, v_conditions, v_exact_limit)
            INTO v_matching, v_ids, v_distances
            USING p_embedding, p_filter, p_top_k, v_tenant;
            IF v_matching <= v_exact_limit THEN
                RETURN QUERY
                SELECT n.chunk_id, n.rank::integer, n.distance
                FROM unnest(v_ids, v_distances) WITH ORDINALITY AS n(chunk_id, distance, rank);
                RETURN;
            END IF;
        END IF;
    END IF;

    PERFORM set_config('hnsw.ef_search',
                       greatest((SELECT h.ef_search
                                 FROM hybridsearch.hnsw_settings(v_collection.settings) AS h),
                                p_top_k)::text,
                       true);
    -- The inner ORDER BY ... LIMIT is the shape pgvector's index scan needs; the outer
    -- query sorts the relaxed-order scan and breaks distance ties by chunk_id so results
    -- are deterministic.
    RETURN QUERY EXECUTE format(
        $sql$
        SELECT nearest.chunk_id,
               (row_number() OVER (ORDER BY nearest.distance, nearest.chunk_id))::integer,
               nearest.distance
        FROM (
            SELECT c.chunk_id, %1$s AS distance
            FROM hybridsearch.chunks c
            WHERE %2$s
            ORDER BY %1$s
            LIMIT $3
        ) AS nearest
        ORDER BY nearest.distance, nearest.chunk_id
        $sql$,
        v_distance, v_conditions)
    USING p_embedding, p_filter, p_top_k, v_tenant;
END;
$$;
