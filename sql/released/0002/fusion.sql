-- Fusion of two ranked candidate lists.
--
-- The current source of these functions (see sql/README.md): edit here, and ship the
-- change in a new alembic revision.

-- A weight's share of a fused score: p_weight * p_fraction, for a weight >= 0 and a
-- fraction >= 0 (at most 1 for rrf and weighted, at most about 45 for zscore). A share
-- below 1e-300 counts as 0: PostgreSQL raises 22003 where IEEE arithmetic rounds a tiny
-- product to 0. In effect a weight below about 1e-290 counts as 0.
CREATE OR REPLACE FUNCTION hybridsearch.fusion_share(
    p_weight double precision,
    p_fraction double precision
)
RETURNS double precision
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT CASE
        WHEN p_weight = 0 OR p_fraction = 0 THEN 0
        WHEN ln(p_weight) + ln(p_fraction) < -690.8 THEN 0  -- ln(1e-300) = -690.78
        ELSE p_weight * p_fraction
    END;
$$;

-- p_a + p_b for shares >= 0, saturating at the largest double instead of raising 22003.
CREATE OR REPLACE FUNCTION hybridsearch.fusion_sum(p_a double precision, p_b double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT CASE
        WHEN p_a >= 1.7976931348623157e308 - p_b THEN 1.7976931348623157e308
        ELSE p_a + p_b
    END;
$$;

-- Reject fusion parameters outside the bounds declared in hybridsearch/params.py (which
-- says why each bound is what it is): fusion zscore, rrf or weighted; rrf_k an integer in
-- [1, 100000]; each weight a finite number in [0, 1000000], not both 0 (every fused score
-- would be 0 and the order arbitrary). PostgreSQL orders NaN above every number, so the
-- upper bound also refuses NaN, as it refuses Infinity.
CREATE OR REPLACE FUNCTION hybridsearch.check_fusion(
    p_method text,
    p_rrf_k integer,
    p_vector_weight double precision,
    p_keyword_weight double precision
)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SECURITY INVOKER
AS $$
BEGIN
    IF p_method IS NULL OR p_method NOT IN ('zscore', 'rrf', 'weighted') THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('fusion must be zscore, rrf or weighted, got %L', p_method);
    END IF;
    IF p_rrf_k IS NULL OR p_rrf_k < 1 OR p_rrf_k > 100000 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('rrf_k must be an integer between 1 and 100000, got %s',
                             coalesce(p_rrf_k::text, 'NULL'));
    END IF;
    IF p_vector_weight IS NULL OR p_vector_weight < 0 OR p_vector_weight > 1e6 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format(
                'vector_weight must be a finite number between 0 and 1000000, got %s',
                coalesce(p_vector_weight::text, 'NULL'));
    END IF;
    IF p_keyword_weight IS NULL OR p_keyword_weight < 0 OR p_keyword_weight > 1e6 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format(
                'keyword_weight must be a finite number between 0 and 1000000, got %s',
                coalesce(p_keyword_weight::text, 'NULL'));
    END IF;
    IF p_vector_weight = 0 AND p_keyword_weight = 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'vector_weight and keyword_weight are both 0, so every fused score '
                      'would be 0 and the order arbitrary; give at least one of them a '
                      'weight above 0';
    END IF;
END;
$$;

-- The fusion a collection searches with where a call leaves a parameter NULL, from the
-- collection's settings (hybridsearch.collections.settings, written by the Python
-- CollectionSettings): its fusion and rrf_k; its weights where set, else the weights its
-- calibration measured (hybridsearch/calibration.py: a leg that cannot read the
-- collection's text counts for less); else the defaults declared in
-- hybridsearch/params.py. search_hybrid and the Python service both resolve defaults
-- here, so a SQL user and the service search a collection the same way.
CREATE OR REPLACE FUNCTION hybridsearch.fusion_defaults(p_settings jsonb)
RETURNS TABLE (
    fusion text,
    rrf_k integer,
    vector_weight double precision,
    keyword_weight double precision
)
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT coalesce(p_settings ->> 'fusion', 'zscore'),
           coalesce((p_settings ->> 'rrf_k')::integer, 60),
           coalesce((p_settings ->> 'vector_weight')::double precision,
                    (p_settings -> 'calibration' ->> 'vector_weight')::double precision,
                    1.0),
           coalesce((p_settings ->> 'keyword_weight')::double precision,
                    (p_settings -> 'calibration' ->> 'keyword_weight')::double precision,
                    1.0);
$$;

-- Fuse two ranked candidate lists (arrays in rank order) into one.
--   zscore:   score = w_v * z_v + w_k * z_k, where z is a value's distance from the
--             worst value of its list in standard deviations of that list
--             ((x - worst) / stddev_pop; vector: smaller distance is better). The
--             default: a list whose best candidates stand out counts for more than
--             one whose values are bunched, and the measure is scale-free, so
--             distances and BM25 scores add up (bench/NOTES.md has the figures).
--   rrf:      score = w_v * (1 / (k + rank_v)) + w_k * (1 / (k + rank_k))
--   weighted: score = w_v * norm_v + w_k * norm_k, where norm is min-max normalised
--             within each list (vector: smaller distance is better)
-- A list whose values are all equal (or that holds one candidate) gives each of its
-- candidates 1 under zscore and weighted. A candidate missing from a list contributes 0
-- for it: under zscore and weighted that is what the list's worst candidate gets. Ties
-- break by chunk_id.
-- The parameters are checked by hybridsearch.check_fusion, p_limit as a TopK.
-- Scores are computed in double precision and never overflow or underflow: each share
-- is hybridsearch.fusion_share, the sum is hybridsearch.fusion_sum.
-- hybridsearch.fusion.fuse in Python is the reference implementation of this function.
CREATE OR REPLACE FUNCTION hybridsearch.fuse_candidates(
    p_vector_ids bigint[],
    p_vector_distances double precision[],
    p_keyword_ids bigint[],
    p_keyword_scores double precision[],
    p_method text DEFAULT 'zscore',
    p_rrf_k integer DEFAULT 60,
    p_vector_weight double precision DEFAULT 1.0,
    p_keyword_weight double precision DEFAULT 1.0,
    p_limit integer DEFAULT 50
)
RETURNS TABLE (
    chunk_id bigint,
    fused_rank integer,
    fused_score double precision,
    vector_rank integer,
    vector_distance double precision,
    keyword_rank integer,
    keyword_score double precision
)
LANGUAGE plpgsql IMMUTABLE SECURITY INVOKER
AS $$
BEGIN
    PERFORM hybridsearch.check_fusion(p_method, p_rrf_k, p_vector_weight, p_keyword_weight);
    PERFORM hybridsearch.check_top_k(p_limit);

    RETURN QUERY
    WITH vec AS (
        SELECT t.id, t.ord::integer AS rnk, t.distance
        FROM unnest(p_vector_ids, p_vector_distances) WITH ORDINALITY AS t(id, distance, ord)
        WHERE t.id IS NOT NULL
    ),
    kw AS (
        SELECT t.id, t.ord::integer AS rnk, t.score
        FROM unnest(p_keyword_ids, p_keyword_scores) WITH ORDINALITY AS t(id, score, ord)
        WHERE t.id IS NOT NULL
    ),
    vec_range AS (
        SELECT min(vec.distance) AS lo, max(vec.distance) AS hi,
               stddev_pop(vec.distance) AS sd
        FROM vec
    ),
    kw_range AS (
        SELECT min(kw.score) AS lo, max(kw.score) AS hi, stddev_pop(kw.score) AS sd
        FROM kw
    ),
    joined AS (
        SELECT coalesce(vec.id, kw.id) AS id,
               vec.rnk AS v_rank, vec.distance AS v_distance,
               kw.rnk AS k_rank, kw.score AS k_score,
               CASE p_method
                   WHEN 'rrf' THEN hybridsearch.fusion_sum(
                       -- in double precision: 1 / integer would truncate to 0
                       coalesce(hybridsearch.fusion_share(
                           p_vector_weight, 1 / (p_rrf_k::double precision + vec.rnk)), 0),
                       coalesce(hybridsearch.fusion_share(
                           p_keyword_weight, 1 / (p_rrf_k::double precision + kw.rnk)), 0))
                   WHEN 'zscore' THEN hybridsearch.fusion_sum(
                       -- (x - worst) / sd <= range / sd <= sqrt(2 * 1000): no overflow
                       CASE WHEN vec.id IS NULL THEN 0
                            WHEN vr.hi = vr.lo OR vr.sd = 0 THEN p_vector_weight
                            ELSE hybridsearch.fusion_share(
                                p_vector_weight, (vr.hi - vec.distance) / vr.sd)
                       END,
                       CASE WHEN kw.id IS NULL THEN 0
                            WHEN kr.hi = kr.lo OR kr.sd = 0 THEN p_keyword_weight
                            ELSE hybridsearch.fusion_share(
                                p_keyword_weight, (kw.score - kr.lo) / kr.sd)
                       END)
                   ELSE hybridsearch.fusion_sum(
                       CASE WHEN vec.id IS NULL THEN 0
                            WHEN vr.hi = vr.lo THEN p_vector_weight
                            ELSE hybridsearch.fusion_share(
                                p_vector_weight, (vr.hi - vec.distance) / (vr.hi - vr.lo))
                       END,
                       CASE WHEN kw.id IS NULL THEN 0
                            WHEN kr.hi = kr.lo THEN p_keyword_weight
                            ELSE hybridsearch.fusion_share(
                                p_keyword_weight, (kw.score - kr.lo) / (kr.hi - kr.lo))
                       END)
               END::double precision AS score
        FROM vec
        FULL JOIN kw ON kw.id = vec.id
        CROSS JOIN vec_range AS vr
        CROSS JOIN kw_range AS kr
    )
    SELECT joined.id,
           (row_number() OVER (ORDER BY joined.score DESC, joined.id))::integer,
           joined.score, joined.v_rank, joined.v_distance, joined.k_rank, joined.k_score
    FROM joined
    ORDER BY joined.score DESC, joined.id
    LIMIT p_limit;
END;
$$;
