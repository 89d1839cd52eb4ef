-- Keyword TopK, the pieces every algorithm shares: the statistics of a query's terms, the
-- BM25 weight and exact score, which chunks a query may return, and the top-K merge.
-- The algorithms (keyword_coverage.sql, keyword_impacts.sql) call these rather than
-- spell them out, so that each is written once: a change to the scoring, to what a
-- query admits or to the order of ties is made here, for all of them.
--
-- The current source of these functions (see sql/README.md): edit here, and ship the
-- change in a new alembic revision.

-- What BM25 needs to know about a query's terms in a collection, exact in this snapshot
-- (collection_stats and term_stats are kept by statement triggers): the terms some chunk
-- holds, rarest (highest idf) first, with their idf and highest tf; the number of chunks,
-- their mean length, and the shortest and longest chunk ever added. terms is NULL when no
-- chunk holds any of them, or the collection has no chunks.
--
--   idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))       (never negative)
CREATE OR REPLACE FUNCTION hybridsearch.keyword_statistics(p_collection_id integer,
                                                          p_terms text[])
RETURNS TABLE (terms text[], idf double precision[], max_tf integer[],
               chunks double precision, avglen double precision,
               min_length integer, max_length integer)
LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    SELECT t.terms, t.idf, t.max_tf, c.chunks, c.avglen, c.min_length, c.max_length
    FROM (
        SELECT sum(s.chunks)::double precision AS chunks,
               sum(s.terms)::double precision / nullif(sum(s.chunks), 0) AS avglen,
               min(s.min_terms) AS min_length, max(s.max_terms) AS max_length
        FROM hybridsearch.collection_stats AS s
        WHERE s.collection_id = p_collection_id
    ) AS c
    CROSS JOIN LATERAL (
        SELECT array_agg(q.term ORDER BY q.idf DESC, q.term) AS terms,
               array_agg(q.idf ORDER BY q.idf DESC, q.term) AS idf,
               array_agg(q.max_tf ORDER BY q.idf DESC, q.term) AS max_tf
        FROM (
            SELECT u.term, ln(1 + (c.chunks - d.df + 0.5) / (d.df + 0.5)) AS idf, d.max_tf
            FROM unnest(p_terms) AS u(term)
            CROSS JOIN LATERAL (
                SELECT sum(ts.df)::double precision AS df, max(ts.max_tf) AS max_tf
                FROM hybridsearch.term_stats AS ts
                WHERE ts.collection_id = p_collection_id AND ts.term = u.term
            ) AS d
            WHERE d.df > 0 AND c.chunks > 0 AND c.avglen > 0
        ) AS q
    ) AS t;
$$;

-- BM25 weight of one term in one chunk, before idf: tf (k1 + 1) / (tf + k1 (1 - b + b dl/avgdl)).
-- Increasing in tf, decreasing in the length dl: the algorithms' bounds rest on that.
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

-- The exact BM25 score of one chunk, from its term frequencies and length: one row, NULL
-- when it holds none of the terms. The terms are summed in the order given (by idf), so
-- a chunk scores the same to the last bit wherever it is scored. Set-returning, so that
-- the planner inlines it where it is called in FROM (CROSS JOIN LATERAL): a scalar SQL
-- function with a subquery would go through the function executor for every chunk.
CREATE OR REPLACE FUNCTION hybridsearch.bm25_score(
    p_term_freqs jsonb,
    p_length integer,
    p_terms text[],
    p_idf double precision[],
    p_k1 double precision,
    p_b double precision,
    p_avglen double precision
)
RETURNS TABLE (score double precision)
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT sum(q.idf * hybridsearch.bm25_weight((d.term_freqs ->> q.term)::double precision,
                                                p_length, p_avglen, p_k1, p_b))
    FROM hybridsearch.detoasted(p_term_freqs) AS d(term_freqs)
    CROSS JOIN unnest(p_terms, p_idf) AS q(term, idf);
$$;

-- Exact BM25 scores of the given chunks.
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
    SELECT c.chunk_id, s.score
    FROM hybridsearch.chunks AS c
    CROSS JOIN LATERAL hybridsearch.bm25_score(c.term_freqs, c.term_count, p_terms, p_idf,
                                               p_k1, p_b, p_avglen) AS s
    WHERE c.collection_id = p_collection_id AND c.chunk_id = ANY (p_chunk_ids);
$$;

-- Whether a query may return a chunk: it matches the required phrases and none of the
-- exclusions, its metadata contains the filter, and it is the tenant's (NULL: no such
-- condition). An algorithm tests this before a chunk becomes a candidate, so every bound
-- it keeps (a K-th score or lower bound) is that of a chunk the query returns. The heap
-- tests come first: fts is TOASTed, a read of its own.
CREATE OR REPLACE FUNCTION hybridsearch.keyword_admits(
    p_fts tsvector,
    p_metadata jsonb,
    p_tenant_id text,
    p_required tsquery,
    p_excluded tsquery,
    p_filter jsonb,
    p_tenant text
)
RETURNS boolean
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT (p_filter IS NULL OR p_metadata @> p_filter)
       AND (p_tenant IS NULL OR p_tenant_id = p_tenant)
       AND (p_required IS NULL OR p_fts @@ p_required)
       AND (p_excluded IS NULL OR NOT p_fts @@ p_excluded);
$$;

-- The positions in p_terms of the terms that every chunk matching p_required holds: all
-- of its lexemes when it joins them with & and phrase operators only (as the required
-- phrases of parse_keyword_query do); none when it has | or !, which make a lexeme
-- optional, or weights or prefixes. The algorithms narrow their index scans with these;
-- whether a chunk matches stays keyword_admits' test.
CREATE OR REPLACE FUNCTION hybridsearch.keyword_required_terms(p_terms text[],
                                                              p_required tsquery)
RETURNS integer[]
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT coalesce(array_agg(t.i::integer ORDER BY t.i), '{}')
    FROM unnest(p_terms) WITH ORDINALITY AS t(term, i)
    -- the operators, once the quoted lexemes are taken out
    WHERE regexp_replace(p_required::text, '''(?:[^'']|'''')*''', '', 'g')
              ~ '^[\s&()<>0-9-]*$'
      AND p_required @> hybridsearch.quote_lexeme(t.term)::tsquery;
$$;

-- The best p_top_k of two lists of exactly scored chunks, by score then chunk_id (the
-- order search_keyword returns), as two arrays in that order. A chunk in both lists
-- counts once: an algorithm may score a chunk again, always to the same score.
CREATE OR REPLACE FUNCTION hybridsearch.keyword_topk_merge(
    p_ids bigint[],
    p_scores double precision[],
    p_new_ids bigint[],
    p_new_scores double precision[],
    p_top_k integer
)
RETURNS TABLE (ids bigint[], scores double precision[])
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT coalesce(array_agg(t.id ORDER BY t.score DESC, t.id), '{}'),
           coalesce(array_agg(t.score ORDER BY t.score DESC, t.id), '{}')
    FROM (
        SELECT m.id, max(m.score) AS score
        FROM (SELECT * FROM unnest(p_ids, p_scores)
              UNION ALL
              SELECT * FROM unnest(p_new_ids, p_new_scores)) AS m(id, score)
        GROUP BY m.id
        ORDER BY score DESC, m.id
        LIMIT p_top_k
    ) AS t;
$$;
