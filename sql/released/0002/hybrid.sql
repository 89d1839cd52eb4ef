-- Hybrid TopK: both legs, fused.
--
-- The current source of these functions (see sql/README.md): edit here, and ship the
-- change in a new alembic revision.

-- Hybrid TopK: vector TopK and keyword TopK, each filtered, fused in SQL.
-- Pass p_embedding NULL for keyword-only or p_query NULL for vector-only search.
-- A fusion parameter left NULL (the default) is the collection's (fusion_defaults).
-- Returns the fused TopK with every stage's rank and score and the chunk's content.
CREATE OR REPLACE FUNCTION hybridsearch.search_hybrid(
    p_collection text,
    p_embedding vector,
    p_query text,
    p_top_k integer DEFAULT 50,
    p_filter jsonb DEFAULT NULL,
    p_fusion text DEFAULT NULL,
    p_rrf_k integer DEFAULT NULL,
    p_vector_weight double precision DEFAULT NULL,
    p_keyword_weight double precision DEFAULT NULL
)
RETURNS TABLE (
    fused_rank integer,
    chunk_id bigint,
    document_id text,
    content text,
    metadata jsonb,
    vector_rank integer,
    vector_distance double precision,
    keyword_rank integer,
    keyword_score double precision,
    fused_score double precision
)
LANGUAGE plpgsql STABLE SECURITY INVOKER
AS $$
DECLARE
    v_collection hybridsearch.collections := hybridsearch.get_collection(p_collection);
    v_vector_ids bigint[];
    v_distances  double precision[];
    v_keyword_ids bigint[];
    v_scores     double precision[];
    v_defaults   record;  -- hybridsearch.fusion_defaults
BEGIN
    PERFORM hybridsearch.check_top_k(p_top_k);
    PERFORM hybridsearch.check_filter(p_filter);
    SELECT * INTO v_defaults FROM hybridsearch.fusion_defaults(v_collection.settings);
    p_fusion := coalesce(p_fusion, v_defaults.fusion);
    p_rrf_k := coalesce(p_rrf_k, v_defaults.rrf_k);
    p_vector_weight := coalesce(p_vector_weight, v_defaults.vector_weight);
    p_keyword_weight := coalesce(p_keyword_weight, v_defaults.keyword_weight);
    -- before either leg runs, not after both (fuse_candidates checks them too)
    PERFORM hybridsearch.check_fusion(p_fusion, p_rrf_k, p_vector_weight, p_keyword_weight);
    -- The legs by internal id (vector_topk, keyword_topk, not search_vector and
    -- search_keyword): the documents are looked up below, for the fused chunks only.
    IF p_embedding IS NOT NULL THEN
        SELECT array_agg(v.chunk_id ORDER BY v.vector_rank),
               array_agg(v.vector_distance ORDER BY v.vector_rank)
        INTO v_vector_ids, v_distances
        FROM hybridsearch.vector_topk(p_collection, p_embedding, p_top_k, p_filter) AS v;
    END IF;
    IF p_query IS NOT NULL THEN
        SELECT array_agg(k.chunk_id ORDER BY k.keyword_rank),
               array_agg(k.keyword_score ORDER BY k.keyword_rank)
        INTO v_keyword_ids, v_scores
        FROM hybridsearch.keyword_topk(p_collection, p_query, p_top_k, p_filter) AS k;
    END IF;

    -- Each fused chunk's content and document, looked up by key (chunk_source).
    RETURN QUERY
    SELECT f.fused_rank, f.chunk_id, x.external_id, x.content, x.metadata,
           f.vector_rank, f.vector_distance, f.keyword_rank, f.keyword_score, f.fused_score
    FROM hybridsearch.fuse_candidates(
             v_vector_ids, v_distances, v_keyword_ids, v_scores,
             p_fusion, p_rrf_k, p_vector_weight, p_keyword_weight, p_top_k) AS f
    CROSS JOIN LATERAL hybridsearch.chunk_source(v_collection.collection_id, f.chunk_id) AS x
    ORDER BY f.fused_rank;
END;
$$;
