-- Keyword TopK: the entry point search_keyword, and keyword_topk, which picks one of two
-- exact algorithms.
--
-- The current source of these functions (see sql/README.md): edit here, and ship the
-- change in a new alembic revision.

-- Keyword TopK as SQL users call it: keyword_topk's chunks, each with the external id of
-- its document (document_id: the id the document was added with, as search_hybrid
-- returns it), so that a caller needs no join to the internal ids.
--
-- The document is looked up by key for each returned chunk (chunk_source). It reads
-- chunks and documents as the caller, under row-level security like keyword_topk, so a tenant
-- sees only its own documents.
-- search_hybrid calls keyword_topk itself, which has no use for the lookup.
CREATE OR REPLACE FUNCTION hybridsearch.search_keyword(
    p_collection text,
    p_query text,
    p_top_k integer DEFAULT 50,
    p_filter jsonb DEFAULT NULL
)
RETURNS TABLE (
    chunk_id bigint,
    document_id text,
    keyword_rank integer,
    keyword_score double precision
)
LANGUAGE plpgsql STABLE SECURITY INVOKER
AS $$
DECLARE
    v_collection hybridsearch.collections := hybridsearch.get_collection(p_collection);
BEGIN
    RETURN QUERY
    SELECT k.chunk_id, x.external_id, k.keyword_rank, k.keyword_score
    FROM hybridsearch.keyword_topk(p_collection, p_query, p_top_k, p_filter) AS k
    CROSS JOIN LATERAL hybridsearch.chunk_source(v_collection.collection_id, k.chunk_id) AS x
    ORDER BY k.keyword_rank;
END;
$$;

-- Keyword TopK by internal id (search_keyword and search_hybrid call it): Okapi BM25 over
-- the chunks matching p_query (web-search syntax, see parse_keyword_query), optionally
-- filtered like search_vector.
--
--   score(c) = sum over query terms t in c of
--              idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(c) / avglen))
--
-- idf, N and avglen are the whole collection's (keyword_statistics); a filter, a tenant,
-- a required phrase or an exclusion restricts the chunks returned, never the statistics.
-- Every query kind goes to one of two algorithms with the same arguments and the same
-- exact result (the top K by score, ties by chunk_id), so the choice is one of speed only:
-- term coverage (keyword_topk_coverage) for queries of a few words where a visit's chunks
-- mostly pass the filter, impact tiers (keyword_topk_impacts) for the rest.
CREATE OR REPLACE FUNCTION hybridsearch.keyword_topk(
    p_collection text,
    p_query text,
    p_top_k integer DEFAULT 50,
    p_filter jsonb DEFAULT NULL
)
RETURNS TABLE (chunk_id bigint, keyword_rank integer, keyword_score double precision)
LANGUAGE plpgsql STABLE SECURITY INVOKER
AS $$
DECLARE
    v_collection hybridsearch.collections := hybridsearch.get_collection(p_collection);
    v_query      hybridsearch.keyword_query;
    v_stats      record;  -- hybridsearch.keyword_statistics
    v_tenant     text := hybridsearch.current_tenant();
    -- {} holds for every chunk: no filter (as in search_vector)
    v_filter     jsonb := nullif(p_filter, '{}'::jsonb);
BEGIN
    PERFORM hybridsearch.check_top_k(p_top_k);
    PERFORM hybridsearch.check_filter(p_filter);
    v_query := hybridsearch.parse_keyword_query(v_collection.analyzer, p_query);
    IF cardinality(v_query.terms) = 0 THEN
        RETURN;  -- nothing searchable (stop words, punctuation): an empty branch
    END IF;
    SELECT * INTO v_stats
    FROM hybridsearch.keyword_statistics(v_collection.collection_id, v_query.terms);
    -- No chunk holds a word of the query; or a required phrase has a word no chunk holds.
    IF v_stats.terms IS NULL
       OR v_query.required IS NOT NULL
          AND cardinality(hybridsearch.keyword_required_terms(v_query.terms, v_query.required))
              > cardinality(hybridsearch.keyword_required_terms(v_stats.terms, v_query.required))
    THEN
        RETURN;
    END IF;

    -- Term coverage is for short queries (its visits grow as 2^terms, where impact tiers
    -- grow with the terms' postings) and large collections: on a partition of a few
    -- thousand chunks the planner reads each visit through a btree, testing every impact
    -- condition per row, rather than one GIN scan (and impact tiers are fast there). A
    -- filter or a tenant that keeps few chunks would have its visits fetch mostly chunks
    -- that fail it, while impact tiers test them on postings they read anyway: coverage
    -- takes what the planner expects to keep 3 % or more (bench/NOTES.md has the figures).
    IF cardinality(v_stats.terms) <= 5 AND v_stats.chunks >= 10000
       AND (v_filter IS NULL AND v_tenant IS NULL
            OR hybridsearch.estimated_matches(v_collection.collection_id, v_filter, v_tenant)
               >= 0.03 * v_stats.chunks) THEN
        RETURN QUERY
        SELECT r.chunk_id, (row_number() OVER ())::integer, r.score
        FROM hybridsearch.keyword_topk_coverage(
            v_collection.collection_id, v_stats.terms, v_stats.idf, v_stats.max_tf,
            v_collection.bm25_k1, v_collection.bm25_b, v_stats.avglen, v_stats.min_length,
            v_stats.max_length, v_stats.chunks, p_top_k, v_query.required, v_query.excluded,
            v_filter, v_tenant) AS r;
    ELSE
        RETURN QUERY
        SELECT r.chunk_id, (row_number() OVER ())::integer, r.score
        FROM hybridsearch.keyword_topk_impacts(
            v_collection.collection_id, v_stats.terms, v_stats.idf, v_stats.max_tf,
            v_collection.bm25_k1, v_collection.bm25_b, v_stats.avglen, v_stats.min_length,
            v_stats.max_length, v_stats.chunks, p_top_k, v_query.required, v_query.excluded,
            v_filter, v_tenant) AS r;
    END IF;
END;
$$;
