-- Keyword TopK over impact tiers.
--
-- The current source of these functions (see sql/README.md): edit here, and ship the
-- change in a new alembic revision.

-- Exact top K by BM25 over the impact tiers (see hybridsearch.impact_keys), for any query
-- (search_keyword's arguments, with the statistics of keyword_statistics; terms by idf,
-- highest first). A threshold algorithm over score-ordered blocks:
--
--   1. Every (term, tf bucket, length bucket) tier gets a bound: the term's idf times
--      its BM25 weight at the bucket's highest tf (at most the term's max_tf) and the
--      bucket's shortest length.
--   2. Rounds visit the unvisited tiers with the best bounds through the GIN index and
--      add each posting's contribution, computed from its tf bucket and the chunk's
--      real length, to the chunk's lower bound; tf buckets above 8 add their lowest
--      weight and keep the gap to their highest. Only chunks the query admits
--      (keyword_admits) become candidates.
--   3. A chunk can still gain, for each term it has not been seen with, at most that
--      term's best unvisited bound. A chunk whose upper bound is below the K-th lower
--      bound is dropped; a chunk never seen cannot beat the sum of those bounds, and
--      once that sum is below the K-th lower bound the rounds stop.
--   4. The candidates left are scored exactly from term_freqs, best upper bound first,
--      until the K-th exact score beats every remaining upper bound.
--
-- Postings are read from GIN posting lists and the narrow heap rows (term_count),
-- never the TOASTed columns, except for the final exact scoring of a few candidates and
-- the tests of required phrases and exclusions; with a required phrase, GIN intersects
-- every lookup with its rarest word first. p_chunks is not used: the arguments are
-- keyword_topk_coverage's, so that the two are called alike.
CREATE OR REPLACE FUNCTION hybridsearch.keyword_topk_impacts(
    p_collection_id integer,
    p_terms text[],
    p_idf double precision[],
    p_max_tf integer[],
    p_k1 double precision,
    p_b double precision,
    p_avglen double precision,
    p_min_length integer,
    p_max_length integer,
    p_chunks double precision,
    p_top_k integer,
    p_required tsquery,
    p_excluded tsquery,
    p_filter jsonb,
    p_tenant text
)
RETURNS TABLE (chunk_id bigint, score double precision)
LANGUAGE plpgsql STABLE SECURITY INVOKER
-- Each tier must be one GIN lookup: on a small table the planner would rather read
-- every row and test its impact keys once per tier, not knowing each test detoasts them.
SET enable_seqscan = off
AS $$
DECLARE
    -- The tiers, best bound first.
    v_keys       text[];
    v_term       integer[];
    v_tf_low     double precision[];
    v_tf_high    double precision[];
    v_bound      double precision[];
    v_next       integer := 1;  -- first unvisited tier
    v_last       integer;
    -- Per term, the bound of its best unvisited tier (0 once all are visited); and what
    -- the terms a chunk was not seen with can still add, by its bits for terms 1-7
    -- (v_unseen_low) and 8-14 (v_unseen_high, which adds all terms after the 14th: a
    -- chunk has no bit for those, and counts as unseen with them).
    v_upper      double precision[];
    v_unseen_low double precision[];
    v_unseen_high double precision[];
    v_unseen_all double precision;
    -- Candidates: chunk, lower bound, tf-bucket gap, bits of the terms seen, upper bound.
    v_ids        bigint[] := '{}';
    v_low        double precision[] := '{}';
    v_gap        double precision[] := '{}';
    v_seen       bigint[] := '{}';
    v_high       double precision[] := '{}';
    v_floor      double precision := 0;  -- the K-th best lower bound so far
    -- The rarest word of the required phrases, as a GIN key; NULL without one.
    v_required   text[] := CASE WHEN p_required IS NOT NULL THEN
                                (SELECT ARRAY[p_terms[r.i[1]]]
                                 FROM (SELECT hybridsearch.keyword_required_terms(
                                                  p_terms, p_required) AS i) AS r
                                 WHERE cardinality(r.i) > 0)
                            END;
    -- Exact scoring of the final candidates.
    v_batch      integer := greatest(2 * p_top_k, 100);
    v_done       integer := 0;
    v_top_ids    bigint[] := '{}';
    v_top_scores double precision[] := '{}';
    v_new_ids    bigint[];
    v_new_scores double precision[];
BEGIN
    -- (the bucket ranges are computed once, not once per term)
    WITH tf_buckets AS MATERIALIZED (
        SELECT * FROM hybridsearch.tf_bucket_ranges()
    ),
    length_buckets AS MATERIALIZED (
        SELECT * FROM hybridsearch.length_bucket_ranges(p_min_length, p_max_length)
    )
    SELECT array_agg(t.key), array_agg(t.term), array_agg(t.tf_low), array_agg(t.tf_high),
           array_agg(t.bound)
    INTO v_keys, v_term, v_tf_low, v_tf_high, v_bound
    FROM (
        SELECT hybridsearch.impact_key(f.low, l.bucket, q.term) AS key, q.i::integer AS term,
               f.low::double precision AS tf_low, f.high::double precision AS tf_high,
               q.idf * hybridsearch.bm25_weight(f.high, l.shortest, p_avglen, p_k1, p_b)
                   AS bound
        FROM unnest(p_terms, p_idf, p_max_tf) WITH ORDINALITY AS q(term, idf, max_tf, i)
        CROSS JOIN LATERAL (
            SELECT r.low, least(r.high, q.max_tf) AS high
            FROM tf_buckets AS r
            -- no chunk holds the term more often than its max_tf
            WHERE r.low <= q.max_tf
        ) AS f
        CROSS JOIN length_buckets AS l
        -- ... or than the chunk is long
        WHERE f.low <= l.longest
        ORDER BY bound DESC, term, key
    ) AS t;

    LOOP
        EXIT WHEN v_next > cardinality(v_keys);
        -- This round's tiers: those within 20 % of the best unvisited bound.
        v_last := v_next;
        WHILE v_last < cardinality(v_keys) AND v_bound[v_last + 1] >= 0.8 * v_bound[v_next] LOOP
            v_last := v_last + 1;
        END LOOP;

        SELECT array_agg(coalesce(u.bound, 0) ORDER BY q.i)
        INTO v_upper
        FROM generate_series(1, cardinality(p_terms)) AS q(i)
        LEFT JOIN (
            SELECT t.term, max(t.bound) AS bound
            FROM unnest(v_term[v_last + 1:], v_bound[v_last + 1:]) AS t(term, bound)
            GROUP BY t.term
        ) AS u ON u.term = q.i;
        SELECT array_agg(s.low ORDER BY m.bits), array_agg(s.high ORDER BY m.bits),
               max(s.low) + max(s.high)
        INTO v_unseen_low, v_unseen_high, v_unseen_all
        FROM generate_series(0, 127) AS m(bits)
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(u.bound) FILTER (
                       WHERE u.i <= 7 AND m.bits & (1 << (u.i::integer - 1)) = 0), 0) AS low,
                   coalesce(sum(u.bound) FILTER (
                       WHERE u.i > 14
                          OR u.i > 7 AND m.bits & (1 << (u.i::integer - 8)) = 0), 0) AS high
            FROM unnest(v_upper) WITH ORDINALITY AS u(bound, i)
        ) AS s;

        WITH fetched AS (
            SELECT c.chunk_id AS id,
                   w.idf * hybridsearch.bm25_weight(t.tf_low, c.term_count, p_avglen, p_k1, p_b)
                       AS low,
                   w.idf * (hybridsearch.bm25_weight(t.tf_high, c.term_count, p_avglen, p_k1, p_b)
                            - hybridsearch.bm25_weight(t.tf_low, c.term_count, p_avglen, p_k1, p_b))
                       AS gap,
                   CASE WHEN t.term <= 14 THEN 1::bigint << (t.term - 1) ELSE 0 END AS seen
            FROM (
                -- the round's tiers of one term and tf bucket differ only in length
                -- bucket, which term_count gives exactly: one lookup takes them all
                SELECT r.term, r.tf_low, r.tf_high, array_agg(r.key) AS keys
                FROM unnest(v_keys[v_next:v_last], v_term[v_next:v_last],
                            v_tf_low[v_next:v_last], v_tf_high[v_next:v_last])
                         AS r(key, term, tf_low, tf_high)
                GROUP BY r.term, r.tf_low, r.tf_high
            ) AS t
            CROSS JOIN LATERAL (SELECT p_idf[t.term] AS idf) AS w
            CROSS JOIN LATERAL (
                SELECT c.chunk_id, c.term_count
                FROM hybridsearch.chunks AS c
                WHERE c.collection_id = p_collection_id
                  AND c.impacts && t.keys
                  AND (v_required IS NULL OR c.impacts && v_required)
                  AND hybridsearch.keyword_admits(c.fts, c.metadata, c.tenant_id, p_required,
                                                  p_excluded, p_filter, p_tenant)
                OFFSET 0  -- a fence: index lookups per tier group, never a join over chunks
            ) AS c
        ),
        merged AS (
            SELECT m.id, sum(m.low) AS low, sum(m.gap) AS gap, bit_or(m.seen) AS seen
            FROM (SELECT * FROM unnest(v_ids, v_low, v_gap, v_seen) AS a(id, low, gap, seen)
                  UNION ALL
                  SELECT * FROM fetched) AS m
            GROUP BY m.id
        ),
        bounded AS (
            SELECT merged.*,
                   merged.low + merged.gap + v_unseen_low[(merged.seen & 127) + 1]
                       + v_unseen_high[((merged.seen >> 7) & 127) + 1] AS high
            FROM merged
        ),
        kth AS (
            SELECT bounded.low FROM bounded ORDER BY bounded.low DESC
            OFFSET p_top_k - 1 LIMIT 1
        ),
        kept AS (
            SELECT bounded.*
            FROM bounded LEFT JOIN kth ON true
            WHERE bounded.high >= greatest(v_floor, kth.low)
            ORDER BY bounded.high DESC
        )
        SELECT coalesce(array_agg(kept.id), '{}'), coalesce(array_agg(kept.low), '{}'),
               coalesce(array_agg(kept.gap), '{}'), coalesce(array_agg(kept.seen), '{}'),
               coalesce(array_agg(kept.high), '{}'),
               greatest(v_floor, (SELECT kth.low FROM kth))
        INTO v_ids, v_low, v_gap, v_seen, v_high, v_floor
        FROM kept;

        v_next := v_last + 1;
        -- Strict: an unseen chunk tying the K-th score could still win on chunk_id.
        EXIT WHEN v_floor > v_unseen_all;
    END LOOP;

    -- Exact scores, candidates in order of their upper bound, until no candidate left
    -- can beat (or tie) the K-th exact score.
    LOOP
        EXIT WHEN v_done >= cardinality(v_ids) OR v_high[v_done + 1] < v_floor;
        EXIT WHEN cardinality(v_top_ids) = p_top_k
              AND v_top_scores[p_top_k] > v_high[v_done + 1];
        SELECT array_agg(e.chunk_id), array_agg(e.score)
        INTO v_new_ids, v_new_scores
        FROM hybridsearch.bm25_scores(p_collection_id, v_ids[v_done + 1:v_done + v_batch],
                                      p_terms, p_idf, p_k1, p_b, p_avglen) AS e;
        SELECT m.ids, m.scores
        INTO v_top_ids, v_top_scores
        FROM hybridsearch.keyword_topk_merge(v_top_ids, v_top_scores, v_new_ids, v_new_scores,
                                             p_top_k) AS m;
        v_done := v_done + v_batch;
        -- Most queries stop within the first batches; those that do not have many
        -- candidates left, and larger batches spend less on merging per candidate.
        v_batch := least(2 * v_batch, 12800);
    END LOOP;

    RETURN QUERY SELECT r.id, r.score FROM unnest(v_top_ids, v_top_scores) AS r(id, score);
END;
$$;
