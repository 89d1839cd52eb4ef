-- What BM25 needs from a chunk, derived by generated columns on chunks (term
-- frequencies, length, impact keys), and the statement trigger that keeps the corpus
-- statistics exact.
--
-- The current source of these functions (see sql/README.md): edit here, and ship the
-- change in a new alembic revision.

-- ---------------------------------------------------------------------------------
-- What BM25 needs from a chunk's tsvector, derived by generated columns on chunks.
-- ---------------------------------------------------------------------------------

-- Term frequencies of a tsvector as {lexeme: count}; exact BM25 scoring reads tf here.
-- Built as json and cast once: about 20 % cheaper per chunk than jsonb_object_agg, which
-- keeps its object sorted as it goes. The lexemes are distinct, so nothing is dropped.
CREATE OR REPLACE FUNCTION hybridsearch.term_freqs(p_fts tsvector)
RETURNS jsonb
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT coalesce(
        json_object_agg(u.lexeme, coalesce(array_length(u.positions, 1), 1))::jsonb,
        '{}'::jsonb)
    FROM unnest(p_fts) AS u;
$$;

-- Number of tokens a tsvector holds (the BM25 document length).
CREATE OR REPLACE FUNCTION hybridsearch.term_count(p_fts tsvector)
RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT coalesce(sum(coalesce(array_length(u.positions, 1), 1)), 0)::integer
    FROM unnest(p_fts) AS u;
$$;

-- Impact tiers. A term's BM25 contribution grows with its frequency tf in the chunk and
-- shrinks with the chunk's length; both are bucketed so that each (term, tf bucket,
-- length bucket) is one GIN key whose posting list holds the chunks of that tier. The
-- keyword search visits tiers in order of their score bound (the best a chunk in the
-- tier can get for the term) and stops once no unvisited tier can change the top K:
-- impact-ordered postings, with the ordering done by the index key.
--
-- tf buckets: 1..8 exactly, then 9, 12, 16, 24, 32, 48, 64, 128 (each up to the next);
-- positions, and so tf, stop at 256 in a tsvector.
CREATE OR REPLACE FUNCTION hybridsearch.tf_buckets()
RETURNS integer[]
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT '{1,2,3,4,5,6,7,8,9,12,16,24,32,48,64,128}'::integer[];
$$;

CREATE OR REPLACE FUNCTION hybridsearch.tf_bucket_ranges()
RETURNS TABLE (low integer, high integer)
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT b.low, coalesce(lead(b.low) OVER (ORDER BY b.low) - 1, 256)
    FROM unnest(hybridsearch.tf_buckets()) AS b(low);
$$;

-- Length buckets: half powers of two, floor(2 * log2(length)); bucket n holds lengths
-- from ceil(2^(n/2)).
CREATE OR REPLACE FUNCTION hybridsearch.length_bucket(p_length integer)
RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT floor(2 * log(2, greatest(p_length, 1)::numeric))::integer;
$$;

-- The length buckets that chunks between p_shortest and p_longest fall in, with the
-- lengths each can hold in that range.
CREATE OR REPLACE FUNCTION hybridsearch.length_bucket_ranges(p_shortest integer, p_longest integer)
RETURNS TABLE (bucket integer, shortest double precision, longest double precision)
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT b.n,
           greatest(p_shortest, ceil(2.0::double precision ^ (b.n / 2.0))),
           least(p_longest, ceil(2.0::double precision ^ ((b.n + 1) / 2.0)) - 1)
    FROM generate_series(hybridsearch.length_bucket(p_shortest),
                         hybridsearch.length_bucket(p_longest)) AS b(n);
$$;

-- The impact key of a term in a tier: '<tf bucket> <length bucket> <lexeme>'.
-- The ::text casts keep these key functions inlinable into impact_keys (an ingest cost
-- per term): integer || text is the STABLE anynonarray || text operator, and PostgreSQL
-- does not inline an IMMUTABLE function whose body is less than immutable.
CREATE OR REPLACE FUNCTION hybridsearch.impact_key(p_tf_bucket integer, p_length_bucket integer,
                                        p_lexeme text)
RETURNS text
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT p_tf_bucket::text || ' ' || p_length_bucket::text || ' ' || p_lexeme;
$$;

-- The tf-level key of a term, held by the chunks whose tf of the term is in tf bucket
-- p_tf_bucket or above: the lexeme itself for bucket 1 (every chunk holding the term),
-- else '>=<tf bucket> <lexeme>'. A lexeme holds no space, so no tier key is a level key.
-- Term coverage asks one GIN scan for the chunks holding some terms, with one of them
-- at some tf or more: with tier keys, each term would be an OR of a key per tier, dozens
-- of posting lists that GIN merges one by one, and that the planner prices so high,
-- list by list, that it would rather read a small partition whole.
CREATE OR REPLACE FUNCTION hybridsearch.tf_level_key(p_tf_bucket integer, p_lexeme text)
RETURNS text
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT CASE WHEN p_tf_bucket = 1 THEN p_lexeme
                ELSE '>=' || p_tf_bucket::text || ' ' || p_lexeme END;
$$;

-- Per distinct term of a tsvector, its impact key and its tf-level keys, one per tf
-- bucket up to its own (most terms have tf 1, and only the lexeme). One pass over
-- unnest(p_fts), which builds a positions and a weights array per lexeme, collects the
-- lexemes, their tfs and the length; the keys are made from those plain arrays.
CREATE OR REPLACE FUNCTION hybridsearch.impact_keys(p_fts tsvector)
RETURNS text[]
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT (SELECT array_agg(hybridsearch.impact_key(
                       t.tf_buckets[pg_catalog.width_bucket(x.tf, t.tf_buckets)],
                       t.length_bucket, x.lexeme))
            FROM unnest(t.lexemes, t.tfs) AS x(lexeme, tf))
           || t.lexemes  -- tf bucket 1
           || (SELECT coalesce(array_agg(hybridsearch.tf_level_key(b.low, x.lexeme)), '{}')
               FROM unnest(t.lexemes, t.tfs) AS x(lexeme, tf),
                    unnest(t.tf_buckets[2:pg_catalog.width_bucket(x.tf, t.tf_buckets)])
                        AS b(low))
    FROM (SELECT coalesce(array_agg(u.lexeme), '{}') AS lexemes,
                 array_agg(u.tf) AS tfs,
                 hybridsearch.length_bucket(coalesce(sum(u.tf), 0)::integer) AS length_bucket,
                 hybridsearch.tf_buckets() AS tf_buckets
          FROM unnest(p_fts) AS u0,
               LATERAL (SELECT u0.lexeme,
                               coalesce(array_length(u0.positions, 1), 1) AS tf) AS u) AS t;
$$;

CREATE OR REPLACE FUNCTION hybridsearch.stats_shard()
RETURNS smallint
LANGUAGE sql VOLATILE SECURITY INVOKER
AS $$
    SELECT (pg_catalog.pg_backend_pid() % 16)::smallint;
$$;

-- One function for both statement triggers: each names its transition table
-- changed_chunks, and TG_OP gives the sign. Lengths and max_tf are all-time bounds, so a
-- delete folds its chunks' values in with least/greatest like an insert: they were
-- counted when the chunks were added, so the bounds readers take over all shards stay
-- the same.
CREATE OR REPLACE FUNCTION hybridsearch.count_changed_chunks()
RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER
AS $$
DECLARE
    v_sign integer := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    -- ORDER BY gives every writer the same lock order, so upserts cannot deadlock.
    INSERT INTO hybridsearch.collection_stats AS s
        (collection_id, shard, chunks, terms, min_terms, max_terms)
    SELECT c.collection_id, hybridsearch.stats_shard(), v_sign * count(*),
           v_sign * sum(c.term_count), min(c.term_count), max(c.term_count)
    FROM changed_chunks c
    GROUP BY c.collection_id
    ORDER BY c.collection_id
    ON CONFLICT (collection_id, shard) DO UPDATE
        SET chunks = s.chunks + EXCLUDED.chunks, terms = s.terms + EXCLUDED.terms,
            min_terms = least(s.min_terms, EXCLUDED.min_terms),
            max_terms = greatest(s.max_terms, EXCLUDED.max_terms);
    INSERT INTO hybridsearch.term_stats AS t (collection_id, term, shard, df, max_tf)
    SELECT c.collection_id, u.lexeme, hybridsearch.stats_shard(), v_sign * count(*),
           max(coalesce(array_length(u.positions, 1), 1))
    FROM changed_chunks c, unnest(c.fts) AS u
    GROUP BY c.collection_id, u.lexeme
    ORDER BY c.collection_id, u.lexeme
    ON CONFLICT (collection_id, term, shard) DO UPDATE
        SET df = t.df + EXCLUDED.df, max_tf = greatest(t.max_tf, EXCLUDED.max_tf);
    RETURN NULL;
END;
$$;
