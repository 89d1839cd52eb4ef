-- Keyword TopK by term coverage.
--
-- The current source of these functions (see sql/README.md): edit here, and ship the
-- change in a new alembic revision.

-- Per query term, a Poisson law of its tf in a chunk whose rate makes P(tf >= 1) the
-- term's df / N (about exp(-idf)): for f from 0 to m + 1 (m: the highest max_tf of the
-- terms), ln P(tf = f) and the tail P(tf >= f), 0 above the term's own max_tf, both at
-- [(t - 1) * (m + 2) + f + 1]; ln P is NULL at m + 1, which no sum reaches. Term
-- coverage estimates with these how many chunks a fetch returns: they decide what a
-- fetch costs, never which chunks the query finds.
CREATE OR REPLACE FUNCTION hybridsearch.keyword_tf_tails(p_idf double precision[],
                                                        p_max_tf integer[])
RETURNS TABLE (ln_p double precision[], tail double precision[])
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    WITH levels AS (
        -- f and ln f!, for f up to the highest max_tf (NULL at the one above)
        SELECT f.f, CASE WHEN f.f <= m.top THEN sum(ln(greatest(f.f, 1))) OVER (ORDER BY f.f)
                    END AS log_factorial
        FROM (SELECT max(x) AS top FROM unnest(p_max_tf) AS x) AS m
        CROSS JOIN generate_series(0, m.top + 1) AS f(f)
    ),
    law AS (
        SELECT q.i, q.max_tf, l.f, ln(r.rate) * l.f - r.rate - l.log_factorial AS ln_p
        FROM unnest(p_idf, p_max_tf) WITH ORDINALITY AS q(idf, max_tf, i)
        CROSS JOIN LATERAL (SELECT -ln(1 - least(exp(-q.idf), 0.999)) AS rate) AS r
        CROSS JOIN levels AS l
    )
    SELECT array_agg(p.ln_p ORDER BY p.i, p.f),
           array_agg(CASE WHEN p.f > p.max_tf THEN 0 ELSE greatest(1 - p.below, 0) END
                     ORDER BY p.i, p.f)
    FROM (
        SELECT law.*,
               coalesce(sum(CASE WHEN law.ln_p < -700 THEN 0 ELSE exp(law.ln_p) END)
                            OVER (PARTITION BY law.i ORDER BY law.f
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS below
        FROM law
    ) AS p;
$$;

-- The tf-level keys (see hybridsearch.tf_level_key) of the chunks holding term
-- p_terms[t] at tf p_levels[t] or more, for each term whose level is not NULL; a level
-- inside a tf bucket takes the whole bucket.
CREATE OR REPLACE FUNCTION hybridsearch.tf_level_keys(p_terms text[], p_levels integer[])
RETURNS text[]
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT coalesce(array_agg(hybridsearch.tf_level_key(
               k.tf_buckets[pg_catalog.width_bucket(t.level, k.tf_buckets)], t.term)), '{}')
    FROM (SELECT hybridsearch.tf_buckets() AS tf_buckets) AS k,
         unnest(p_terms, p_levels) AS t(term, level)
    WHERE t.level IS NOT NULL;
$$;

-- Exact top K by BM25 for queries of at most 8 terms (one subset of them per bit of a
-- mask; search_keyword sends it up to 5), with search_keyword's arguments and the
-- statistics of keyword_statistics (terms by idf, highest first), by term coverage:
-- which of the query terms a chunk holds, and how often. On short queries most chunks
-- hold one term at tf 1, and the top K hold several, or one often; impact tiers would
-- visit every posting of every term before their bound dropped (the weights within a
-- term's posting list are nearly flat), while a GIN scan with one key per term intersects
-- the lists inside the index and visits the heap only for chunks holding all of them.
-- Its keys are tf-level keys (hybridsearch.tf_level_key): each term t of the subset, and
-- some '>=f t' for the levels below, so one visit is one GIN scan of a few posting lists.
-- Fetched chunks that the query admits (keyword_admits) are scored exactly from
-- term_freqs and merged into the top K; the threshold is its K-th score (0 until K).
--
--   1. Each subset S of the terms bounds the chunks holding S: every term at its max_tf
--      and the shortest length; a second, lower bound (every term at tf 1) covers the
--      chunks whose terms of S are all at tf 1. Subsets are visited best bound first,
--      until a bound falls below the threshold. Only subsets holding every word of the
--      required phrases are visited: no other chunk is admitted.
--   2. The first visit of S fetches the chunks holding every term of S where some term
--      t reaches a level: the levels start above each max_tf and come down, rare terms
--      first, until a chunk below all of them scores under the threshold. The second
--      fetches all chunks holding S; chunks holding a superset of S are then skipped.
--      Common terms may be left out of the index's keys (step 7).
--   3. Each GIN scan costs about the length of the posting lists it reads, whatever it
--      returns; while the threshold is low, the levels of common terms would come down
--      to lists of most of the collection. So the levels also stop where a Poisson law
--      of each term's frequency expects more than a budget of chunks (2 K at first, 4
--      times more each time the visit comes down again); the visit then stands as if
--      its threshold were what a chunk below those levels can score, and comes down
--      from there once the fetch has raised the real one.
--   4. A visit fetches at most 10 K chunks at a time (or 4 times its budget). Past
--      that, the chunks scored raise the threshold, and the visit starts again with
--      higher levels (or is no longer needed). When they do not, the levels go up to
--      halfway between the threshold and the bound (bisection) until a fetch is whole,
--      whose chunks, the best of the visit, raise the threshold; then the visit comes
--      down to the threshold, fetched whole.
--   5. A fetch is skipped when an earlier whole fetch covers it: that one's chunks held
--      a subset of its terms and reached, for every term here, a level at or below this
--      one's. With the common terms left to the scoring, the whole fetches of a visit of
--      S often cover the later visits of its subsets.
--   6. A subset that the Poisson law expects at most 2 K chunks to hold (on the bench,
--      most subsets of three or more terms) is fetched whole on its first visit, which
--      then stands for both: two visits read the subset's posting lists twice, and one
--      that scores a few more chunks reads them once. If that fetch is capped, the visit
--      goes by levels after all.
--   7. Each fetch weighs, for each term of S but the rarest, reading its posting list
--      against scoring the chunks it would filter out, and leaves the cheaper one to GIN:
--      without the term, the fetch returns a superset of its chunks, all scored exactly.
--
-- p_max_length is not used: the arguments are keyword_topk_impacts', so that the two
-- are called alike.
CREATE OR REPLACE FUNCTION hybridsearch.keyword_topk_coverage(
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
SET enable_seqscan = off
-- Each statement is planned once a session, for any keys: custom plans, made again for
-- every fetch of every call, would cost more than the fetch gains from them (the visits'
-- keys are GIN conditions whichever their values).
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_m          integer := cardinality(p_terms);
    v_maxtf      integer := (SELECT max(x) FROM unnest(p_max_tf) AS x);
    -- the weight of term t at tf f (0 .. v_maxtf, capped at its max_tf) and the shortest
    -- length, at v_w[(t - 1) * (v_maxtf + 1) + f + 1]
    v_w          double precision[];
    -- the terms of the required phrases (bits), which every subset visited holds
    v_required   integer := CASE WHEN p_required IS NULL THEN 0 ELSE
                                (SELECT coalesce(sum(1 << (r.i - 1)), 0)
                                 FROM unnest(hybridsearch.keyword_required_terms(
                                                 p_terms, p_required)) AS r(i))
                            END;
    -- subsets of the terms (bit masks), best bound first
    v_masks      integer[];
    v_bounds     double precision[];
    v_all        boolean[];
    v_done       integer[] := '{}';  -- subsets whose every chunk has been fetched
    v_mask       integer;
    v_members    integer[];  -- the terms of the subset
    v_eff        double precision;
    -- A visit fetches at most this many chunks at first (or 4 times its budget, if
    -- more): when there are more, those scored raise the threshold and the visit starts
    -- again at higher levels.
    v_fetch_cap  integer := greatest(10 * p_top_k, 200);
    v_cap        integer;
    v_fetched    bigint;
    v_kth        double precision;
    v_came_down  boolean;   -- the visit fetched whole above the threshold, then came down
    v_last_keys  text[];    -- the levels' keys of the last capped fetch
    -- the GIN keys of one fetch: the chunk holds every one of v_holds_all (the subset's
    -- terms) and some of v_level_keys (its tf levels)
    v_holds_all  text[];
    v_level_keys text[];
    v_whole      boolean;           -- this visit fetches every chunk holding S (step 6)
    v_rows       double precision;  -- chunks a fetch is expected to return (step 7)
    v_p          double precision;  -- the chance that a chunk holds a term
    -- per term of the subset, the tf a fetched chunk must reach in one of them
    v_levels     integer[];
    v_pick       integer;
    v_pick_term  integer;
    -- per term, ln P(tf = f) and P(tf >= f) under a Poisson law of its tf (see
    -- keyword_tf_tails), at [(t - 1) * (v_maxtf + 2) + f + 1] for f from 0 to v_maxtf + 1
    v_ln_p       double precision[];
    v_tail       double precision[];
    -- how many chunks a fetch may be expected to hold, by those chances, when the
    -- threshold alone would have the levels come down further (see step 3 above)
    v_budget     double precision;
    v_held       double precision;  -- chances that a chunk holds every term of the subset
    v_below      double precision;  -- ... and holds each below its level
    v_reach      double precision;  -- the most a chunk below every level can score
    v_steps      integer;           -- levels lowered for this fetch ...
    v_whole_steps integer;          -- ... and for the visit's last whole fetch
    v_holds_mask integer;           -- the terms of v_holds_all, as bits
    -- per whole fetch so far: the terms its chunks hold (bits), and its levels, v_m a
    -- fetch (NULL: none for that term); see step 5 above
    v_cover_masks integer[] := '{}';
    v_cover_levels integer[] := '{}';
    v_top_ids    bigint[] := '{}';
    v_top_scores double precision[] := '{}';
BEGIN
    IF v_m > 8 THEN
        RAISE EXCEPTION 'term coverage takes at most 8 terms, got %', v_m
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(CASE WHEN f.f = 0 THEN 0 ELSE q.idf * hybridsearch.bm25_weight(
                         least(f.f, q.max_tf), p_min_length, p_avglen, p_k1, p_b) END
                     ORDER BY q.i, f.f)
    INTO v_w
    FROM unnest(p_idf, p_max_tf) WITH ORDINALITY AS q(idf, max_tf, i)
    CROSS JOIN generate_series(0, v_maxtf) AS f(f);

    SELECT t.ln_p, t.tail INTO v_ln_p, v_tail
    FROM hybridsearch.keyword_tf_tails(p_idf, p_max_tf) AS t;

    -- Each subset is visited twice: for its chunks with a term at tf >= 2 (bound: every
    -- term at its max_tf) and for all its chunks (bound: every term at tf 1), so the
    -- many chunks of common terms are fetched only once the bound of tf 1 is needed.
    SELECT array_agg(s.mask ORDER BY s.bound DESC, s.mask, s.fetch_all),
           array_agg(s.bound ORDER BY s.bound DESC, s.mask, s.fetch_all),
           array_agg(s.fetch_all ORDER BY s.bound DESC, s.mask, s.fetch_all)
    INTO v_masks, v_bounds, v_all
    FROM (
        SELECT m.mask, a.fetch_all,
               sum(v_w[(t.i - 1) * (v_maxtf + 1)
                       + CASE WHEN a.fetch_all THEN 1 ELSE p_max_tf[t.i] END + 1]) AS bound,
               max(p_max_tf[t.i]) AS max_tf
        FROM generate_series(1, (1 << v_m) - 1) AS m(mask)
        CROSS JOIN (VALUES (false), (true)) AS a(fetch_all)
        CROSS JOIN generate_series(1, v_m) AS t(i)
        WHERE m.mask & (1 << (t.i - 1)) <> 0 AND m.mask & v_required = v_required
        GROUP BY m.mask, a.fetch_all
    ) AS s
    WHERE s.fetch_all OR s.max_tf >= 2;

    FOR s IN 1 .. cardinality(v_masks) LOOP
        v_mask := v_masks[s];
        v_eff := coalesce(v_top_scores[p_top_k], 0);
        EXIT WHEN v_bounds[s] < v_eff;
        -- every chunk holding all terms of a subset of this one was fetched already
        CONTINUE WHEN EXISTS (SELECT FROM unnest(v_done) AS d(mask)
                              WHERE d.mask & v_mask = d.mask);
        v_members := ARRAY(SELECT t.i FROM generate_series(1, v_m) AS t(i)
                           WHERE v_mask & (1 << (t.i - 1)) <> 0 ORDER BY t.i);
        v_held := 1;
        FOREACH v_pick_term IN ARRAY v_members LOOP
            v_held := v_held * v_tail[(v_pick_term - 1) * (v_maxtf + 2) + 2];
        END LOOP;
        v_budget := 2 * p_top_k;
        v_cap := greatest(v_fetch_cap, 4 * v_budget);
        v_whole := v_all[s] OR p_chunks * v_held <= v_budget;
        v_whole_steps := -1;
        v_came_down := false;
        v_last_keys := NULL;
        LOOP
            IF v_whole THEN
                v_level_keys := ARRAY[hybridsearch.tf_level_key(1, p_terms[v_members[1]])];
            ELSE
                -- A chunk whose every term t of the subset is below v_levels[t] scores at
                -- most the sum of their weights at v_levels[t] - 1: lower the levels until
                -- that sum is below v_eff, and no further than 2 (tf 1 everywhere is the
                -- second visit's). Each step lowers the level that buys the largest drop
                -- in weight per chunk it adds, as a Poisson law of the term's frequency
                -- estimates them: rare terms first, and common ones only at high tf.
                v_levels := array_fill(NULL::integer, ARRAY[v_m]);
                FOREACH v_pick IN ARRAY v_members LOOP
                    v_levels[v_pick] := p_max_tf[v_pick] + 1;
                END LOOP;
                v_steps := 0;
                LOOP
                    v_reach := (SELECT sum(v_w[(t.i - 1) * (v_maxtf + 1) + v_levels[t.i]])
                                FROM unnest(v_members) AS t(i));
                    EXIT WHEN v_reach < v_eff;
                    SELECT t.i INTO v_pick
                    FROM unnest(v_members) AS t(i)
                    WHERE v_levels[t.i] > 2
                    -- (in logs: the chance of a high tf of a rare term underflows)
                    ORDER BY ln(greatest(v_w[(t.i - 1) * (v_maxtf + 1) + v_levels[t.i]]
                                         - v_w[(t.i - 1) * (v_maxtf + 1) + v_levels[t.i] - 1],
                                         1e-300))
                             - v_ln_p[(t.i - 1) * (v_maxtf + 2) + v_levels[t.i]] DESC, t.i
                    LIMIT 1;
                    EXIT WHEN v_pick IS NULL;
                    -- Within the budget? Else stop here, and raise v_eff to what a chunk
                    -- left below these levels can score at most (and a hair above, as
                    -- those chunks must score below v_eff). A fetch after a whole one
                    -- goes at least a level further.
                    IF v_steps > v_whole_steps THEN
                        v_below := 1;
                        FOREACH v_pick_term IN ARRAY v_members LOOP
                            v_below := v_below * greatest(
                                v_tail[(v_pick_term - 1) * (v_maxtf + 2) + 2]
                                - v_tail[(v_pick_term - 1) * (v_maxtf + 2)
                                         + v_levels[v_pick_term]
                                         + CASE WHEN v_pick_term = v_pick THEN 0 ELSE 1 END],
                                0);
                        END LOOP;
                        IF p_chunks * (v_held - v_below) > v_budget THEN
                            v_eff := (1 + 1e-12) * v_reach;
                            EXIT;
                        END IF;
                    END IF;
                    v_levels[v_pick] := v_levels[v_pick] - 1;
                    v_steps := v_steps + 1;
                END LOOP;
                v_level_keys := hybridsearch.tf_level_keys(p_terms, v_levels);
                IF v_level_keys = v_last_keys THEN
                    -- The keys of the last capped fetch, which would fetch the same
                    -- chunks again: further up (halfway to the bound), or fetch it whole.
                    IF NOT v_came_down AND v_bounds[s] - v_eff > 1e-9 * v_bounds[s] THEN
                        v_eff := (v_eff + v_bounds[s]) / 2;
                        CONTINUE;
                    END IF;
                    v_cap := NULL;
                END IF;
            END IF;
            -- The GIN keys of the fetch (step 7): the terms every chunk fetched must hold.
            -- Leaving a term out saves reading its posting list (about 10 ns an item) and
            -- fetches 1 / P(term) times as many chunks (about 7 us each to score), so
            -- terms are left out, most common first, while df > 700 rows (1 - P) / P.
            -- v_rows: how many chunks the fetch is expected to return, by the Poisson law.
            v_below := 0;
            IF NOT v_whole THEN
                v_below := 1;
                FOREACH v_pick_term IN ARRAY v_members LOOP
                    v_below := v_below * (v_tail[(v_pick_term - 1) * (v_maxtf + 2) + 2]
                                          - v_tail[(v_pick_term - 1) * (v_maxtf + 2)
                                                   + v_levels[v_pick_term] + 1]);
                END LOOP;
            END IF;
            v_rows := p_chunks * greatest(v_held - v_below, 0);
            v_holds_mask := v_mask;
            FOR v_pick_term IN SELECT t.i FROM unnest(v_members) AS t(i)
                               WHERE t.i <> v_members[1]
                               ORDER BY v_tail[(t.i - 1) * (v_maxtf + 2) + 2] DESC, t.i LOOP
                v_p := v_tail[(v_pick_term - 1) * (v_maxtf + 2) + 2];
                EXIT WHEN p_chunks * v_p * v_p < 700 * greatest(v_rows, 1) * (1 - v_p);
                v_holds_mask := v_holds_mask & ~(1 << (v_pick_term - 1));
                v_rows := v_rows / v_p;
            END LOOP;
            v_holds_all := ARRAY(SELECT hybridsearch.tf_level_key(1, p_terms[t.i])
                                 FROM unnest(v_members) AS t(i)
                                 WHERE v_holds_mask & (1 << (t.i - 1)) <> 0
                                 ORDER BY t.i);
            -- Skip a fetch that an earlier whole one covers (step 5): as if fetched whole.
            IF NOT v_whole AND EXISTS (
                SELECT FROM generate_subscripts(v_cover_masks, 1) AS r(i)
                WHERE v_cover_masks[r.i] & ~v_holds_mask = 0
                  AND NOT EXISTS (
                      SELECT FROM unnest(v_members) AS t(i)
                      WHERE coalesce(v_cover_levels[(r.i - 1) * v_m + t.i] > v_levels[t.i],
                                     true)))
            THEN
                v_fetched := 0;
                v_cap := NULL;
            ELSE
                WITH visited AS (
                    SELECT c.chunk_id AS id, e.score
                    FROM hybridsearch.chunks AS c
                    CROSS JOIN LATERAL hybridsearch.bm25_score(
                        c.term_freqs, c.term_count, p_terms, p_idf, p_k1, p_b, p_avglen) AS e
                    WHERE c.collection_id = p_collection_id
                      -- a key per term, as eight conditions rather than one @> (GIN steps
                      -- through separate keys faster); past the subset's size, the first
                      -- again. The levels come first: GIN advances the keys in their order,
                      -- each past the last one's item, so the first key sets the pace, and
                      -- the levels' lists are mostly the shorter.
                      AND c.impacts && v_level_keys
                      AND c.impacts && ARRAY[v_holds_all[1]]
                      AND c.impacts && ARRAY[coalesce(v_holds_all[2], v_holds_all[1])]
                      AND c.impacts && ARRAY[coalesce(v_holds_all[3], v_holds_all[1])]
                      AND c.impacts && ARRAY[coalesce(v_holds_all[4], v_holds_all[1])]
                      AND c.impacts && ARRAY[coalesce(v_holds_all[5], v_holds_all[1])]
                      AND c.impacts && ARRAY[coalesce(v_holds_all[6], v_holds_all[1])]
                      AND c.impacts && ARRAY[coalesce(v_holds_all[7], v_holds_all[1])]
                      AND c.impacts && ARRAY[coalesce(v_holds_all[8], v_holds_all[1])]
                      AND hybridsearch.keyword_admits(c.fts, c.metadata, c.tenant_id, p_required,
                                                      p_excluded, p_filter, p_tenant)
                    LIMIT v_cap
                )
                -- a chunk is fetched again by every subset of its terms that is visited:
                -- the merge counts it once
                SELECT m.ids, m.scores, f.n
                INTO v_top_ids, v_top_scores, v_fetched
                FROM (SELECT array_agg(visited.id) AS ids, array_agg(visited.score) AS scores,
                             count(*) AS n
                      FROM visited) AS f
                CROSS JOIN LATERAL hybridsearch.keyword_topk_merge(
                    v_top_ids, v_top_scores, f.ids, f.scores, p_top_k) AS m;
            END IF;

            v_kth := coalesce(v_top_scores[p_top_k], 0);
            IF v_cap IS NULL OR v_fetched < v_cap THEN
                v_cover_masks := v_cover_masks || v_holds_mask;
                v_cover_levels := v_cover_levels
                                  || CASE WHEN v_whole THEN array_fill(1, ARRAY[v_m])
                                          ELSE v_levels END;
                -- Fetched whole: done unless this fetch stopped above the threshold (see
                -- below); then come down to it, this time fetching it whole if it is capped
                -- and raises nothing.
                IF v_whole THEN
                    v_done := v_done || v_mask;  -- (only a whole visit of all chunks)
                    EXIT;
                END IF;
                EXIT WHEN v_eff <= v_kth;
                v_eff := v_kth;
                v_budget := 4 * v_budget;
                v_cap := greatest(v_fetch_cap, 4 * v_budget);
                v_whole_steps := v_steps;
                v_came_down := true;
                CONTINUE;
            END IF;
            -- Capped: the chunks scored may raise the threshold, and with it the levels,
            -- or rule the subset out. If they do neither, the levels go up to halfway
            -- between the threshold and the bound, whose best chunks will raise it; a
            -- visit of all chunks, or one already come down, is fetched whole.
            EXIT WHEN v_bounds[s] < v_kth;
            IF v_whole AND NOT v_all[s] THEN
                -- more chunks hold the subset than expected: visit it by levels after all
                v_whole := false;
                v_eff := greatest(v_eff, v_kth);
            ELSIF v_kth > v_eff THEN
                v_eff := v_kth;
            ELSIF v_whole OR v_came_down THEN
                v_cap := NULL;
            ELSE
                v_eff := (v_eff + v_bounds[s]) / 2;
            END IF;
            v_last_keys := v_level_keys;
        END LOOP;
    END LOOP;

    RETURN QUERY SELECT r.id, r.score FROM unnest(v_top_ids, v_top_scores) AS r(id, score);
END;
$$;
