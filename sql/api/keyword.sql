-- Keyword TopK: BM25 scoring and the entry point search_keyword.
--
-- The current source of these functions (see sql/README.md): edit here, and ship the
-- change in a new alembic revision.

-- BM25 weight of one term in one chunk, before idf: tf (k1 + 1) / (tf + k1 (1 - b + b dl/avgdl)).
CREATE OR REPLACE FUNCTION hybridsearch.bm25_weight(
    p_tf double precision,
    p_length double precision,
    p_avglen double precision,
    p_k1 double precision,
    p_b double precision
)
RETURNS double precision
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT p_tf * (p_k1 + 1) / (p_tf + p_k1 * (1 - p_b + p_b * p_length / p_avglen));
$$;

-- A jsonb value read once: a TOASTed column referenced inside a per-row subquery is
-- fetched and decompressed again for every reference (every query term).
CREATE OR REPLACE FUNCTION hybridsearch.detoasted(p_value jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT '{}'::jsonb || p_value;
$$;

-- Exact BM25 scores of the given chunks for the given terms.
CREATE OR REPLACE FUNCTION hybridsearch.bm25_scores(
    p_collection_id integer,
    p_chunk_ids bigint[],
    p_terms text[],
    p_idf double precision[],
    p_k1 double precision,
    p_b double precision,
    p_avglen double precision
)
RETURNS TABLE (chunk_id bigint, score double precision)
LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    SELECT c.chunk_id,
           (SELECT sum(q.idf * hybridsearch.bm25_weight(
                       (d.term_freqs ->> q.term)::double precision, c.term_count,
                       p_avglen, p_k1, p_b))
            FROM unnest(p_terms, p_idf) AS q(term, idf))
    FROM hybridsearch.chunks AS c
    CROSS JOIN LATERAL hybridsearch.detoasted(c.term_freqs) AS d(term_freqs)
    WHERE c.collection_id = p_collection_id AND c.chunk_id = ANY (p_chunk_ids);
$$;

-- Exact top K by BM25 with MaxScore pruning over the full-text GIN index: terms are
-- visited rarest first, each step scores only the chunks holding that term and none
-- of the earlier ones, and the loop stops once the unvisited terms' bounds cannot beat
-- the K-th score. Serves queries with required phrases or exclusions, which it checks
-- with @@ on every candidate. Terms come sorted by idf, highest first.
CREATE OR REPLACE FUNCTION hybridsearch.keyword_topk_maxscore(
    p_collection_id integer,
    p_terms text[],
    p_idf double precision[],
    p_k1 double precision,
    p_b double precision,
    p_avglen double precision,
    p_top_k integer,
    p_required tsquery,
    p_excluded tsquery,
    p_filter jsonb,
    p_tenant text
)
RETURNS TABLE (chunk_id bigint, score double precision)
LANGUAGE plpgsql STABLE SECURITY INVOKER
AS $$
DECLARE
    v_remaining  double precision;
    v_ids        bigint[] := '{}';
    v_scores     double precision[] := '{}';
    v_threshold  double precision := 0;
BEGIN
    SELECT sum(idf * (p_k1 + 1)) INTO v_remaining FROM unnest(p_idf) AS idf;
    FOR i IN 1 .. cardinality(p_terms) LOOP
        -- Strict: a chunk tying the K-th score could still win on chunk_id.
        EXIT WHEN cardinality(v_ids) = p_top_k AND v_remaining < v_threshold;
        v_remaining := v_remaining - p_idf[i] * (p_k1 + 1);

        WITH step AS (
            SELECT c.chunk_id,
                   (SELECT sum(q.idf * hybridsearch.bm25_weight(
                               (d.term_freqs ->> q.term)::double precision, c.term_count,
                               p_avglen, p_k1, p_b))
                    FROM unnest(p_terms, p_idf) AS q(term, idf)) AS score
            FROM hybridsearch.chunks AS c
            CROSS JOIN LATERAL hybridsearch.detoasted(c.term_freqs) AS d(term_freqs)
            WHERE c.collection_id = p_collection_id
              AND c.fts @@ hybridsearch.quote_lexeme(p_terms[i])::tsquery
              AND NOT c.term_freqs ?| p_terms[1:i - 1]
              AND (p_required IS NULL OR c.fts @@ p_required)
              AND (p_excluded IS NULL OR NOT c.fts @@ p_excluded)
              AND (p_filter IS NULL OR c.metadata @> p_filter)
              AND (p_tenant IS NULL OR c.tenant_id = p_tenant)
            ORDER BY score DESC, c.chunk_id
            LIMIT p_top_k
        ),
        merged AS (
            SELECT m.id, m.score
            FROM (SELECT * FROM unnest(v_ids, v_scores) AS b(id, score)
                  UNION ALL
                  SELECT step.chunk_id, step.score FROM step) AS m
            ORDER BY m.score DESC, m.id
            LIMIT p_top_k
        )
        SELECT coalesce(array_agg(merged.id ORDER BY merged.score DESC, merged.id), '{}'),
               coalesce(array_agg(merged.score ORDER BY merged.score DESC, merged.id), '{}')
        INTO v_ids, v_scores
        FROM merged;
        IF cardinality(v_ids) = p_top_k THEN
            v_threshold := v_scores[p_top_k];
        END IF;
    END LOOP;

    RETURN QUERY SELECT r.id, r.score FROM unnest(v_ids, v_scores) AS r(id, score);
END;
$$;

-- Keyword TopK: Okapi BM25 over the chunks matching p_query (web-search syntax, see
-- parse_keyword_query), optionally filtered like search_vector.
--
--   score(c) = sum over query terms t in c of
--              idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(c) / avglen))
--   idf(t)   = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))       (never negative)
--
-- N, avglen and df come from collection_stats and term_stats, exact in this snapshot.
-- Evaluation is exact with dynamic pruning: queries of up to 5 plain words in collections
-- of 10,000 chunks or more, unfiltered or with a filter keeping 3 % of the chunks or more,
-- go by term coverage (keyword_topk_coverage), other plain word queries walk the impact
-- tiers (keyword_topk_impacts); queries with required phrases or exclusions use MaxScore
-- over the full-text index (keyword_topk_maxscore).
CREATE OR REPLACE FUNCTION hybridsearch.search_keyword(
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
    v_chunks     double precision;
    v_avglen     double precision;
    v_min_length integer;
    v_max_length integer;
    v_terms      text[];
    v_idf        double precision[];
    v_max_tf     integer[];
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

    SELECT sum(s.chunks), sum(s.terms)::double precision / nullif(sum(s.chunks), 0),
           min(s.min_terms), max(s.max_terms)
    INTO v_chunks, v_avglen, v_min_length, v_max_length
    FROM hybridsearch.collection_stats AS s
    WHERE s.collection_id = v_collection.collection_id;
    IF coalesce(v_chunks, 0) = 0 OR v_avglen = 0 THEN
        RETURN;
    END IF;

    -- Query terms present in the collection, rarest (highest idf) first.
    SELECT array_agg(t.term ORDER BY t.idf DESC, t.term),
           array_agg(t.idf ORDER BY t.idf DESC, t.term),
           array_agg(t.max_tf ORDER BY t.idf DESC, t.term)
    INTO v_terms, v_idf, v_max_tf
    FROM (
        SELECT q.term, ln(1 + (v_chunks - d.df + 0.5) / (d.df + 0.5)) AS idf, d.max_tf
        FROM unnest(v_query.terms) AS q(term)
        CROSS JOIN LATERAL (
            SELECT sum(ts.df)::double precision AS df, max(ts.max_tf) AS max_tf
            FROM hybridsearch.term_stats AS ts
            WHERE ts.collection_id = v_collection.collection_id AND ts.term = q.term
        ) AS d
        WHERE d.df > 0
    ) AS t;
    IF v_terms IS NULL THEN
        RETURN;
    END IF;

    -- Coverage is for short queries (its visits grow as 2^terms: 8 common words took
    -- seconds where impact tiers take milliseconds) and large collections: on a partition
    -- of a few thousand chunks the planner reads each visit through a btree, testing nine
    -- impact conditions per row, rather than one GIN scan (and impact tiers are fast
    -- there). A filter or a tenant that keeps few chunks would have its visits fetch
    -- mostly chunks that fail it, while impact tiers test them on postings they read
    -- anyway. At 1M chunks, a filter keeping 10 % took p50/p95 33/68 ms by coverage and
    -- 105/360 by impact tiers; one keeping 1 %, 66/164 and 31/118. So coverage takes
    -- what the planner expects to keep 3 % or more (measured at 1 % and 10 % only).
    IF v_query.required IS NULL AND v_query.excluded IS NULL AND cardinality(v_terms) <= 5
       AND v_chunks >= 10000
       AND (v_filter IS NULL AND v_tenant IS NULL
            OR hybridsearch.estimated_matches(v_collection.collection_id, v_filter, v_tenant)
               >= 0.03 * v_chunks) THEN
        RETURN QUERY
        SELECT r.chunk_id, (row_number() OVER ())::integer, r.score
        FROM hybridsearch.keyword_topk_coverage(
            v_collection.collection_id, v_terms, v_idf, v_max_tf, v_collection.bm25_k1,
            v_collection.bm25_b, v_avglen, v_min_length, v_chunks, p_top_k, v_filter,
            v_tenant) AS r;
    ELSIF v_query.required IS NULL AND v_query.excluded IS NULL AND cardinality(v_terms) <= 62 THEN
        RETURN QUERY
        SELECT r.chunk_id, (row_number() OVER ())::integer, r.score
        FROM hybridsearch.keyword_topk_impacts(
            v_collection.collection_id, v_terms, v_idf, v_max_tf, v_collection.bm25_k1,
            v_collection.bm25_b, v_avglen, v_min_length, v_max_length, p_top_k, v_filter,
            v_tenant) AS r;
    ELSE
        RETURN QUERY
        SELECT r.chunk_id, (row_number() OVER ())::integer, r.score
        FROM hybridsearch.keyword_topk_maxscore(
            v_collection.collection_id, v_terms, v_idf, v_collection.bm25_k1,
            v_collection.bm25_b, v_avglen, p_top_k, v_query.required, v_query.excluded,
            v_filter, v_tenant) AS r;
    END IF;
END;
$$;
