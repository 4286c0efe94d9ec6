-- title: Funnel
-- description: How many visitors went through the steps in order, and the conversion of each step.
-- definition: step 1 is a visitor's first event named like step 1 in the range; step k counts when the same visitor has an event named like step k after step k−1 and within the window from step 1. Up to 5 steps; visitors as in queries/README.md.
-- param: from timestamp = -30d : start of the range (inclusive)
-- param: to timestamp = now : end of the range (exclusive)
-- param: source string = * : one source, or * for all
-- param: steps list(2..5) = Signed Up,Activated,Purchased : comma-separated event names, 2 to 5
-- param: window_days int(1..90) = 7 : days from step 1 in which the later steps must happen
WITH names AS (
    SELECT string_to_array($steps, ',') AS s
),
scoped AS (
    SELECT e.*, array_position(string_to_array($steps, ','), e.event) AS step
    FROM events e
    WHERE e.timestamp >= $from AND e.timestamp < $to AND ($source = '*' OR e.source = $source)
      AND array_has(string_to_array($steps, ','), e.event)
),
identified AS (
    SELECT anonymous_id, min(user_id) AS known_user FROM events
    WHERE timestamp >= $from AND timestamp < $to AND ($source = '*' OR source = $source)
      AND anonymous_id IS NOT NULL AND user_id IS NOT NULL
    GROUP BY anonymous_id
),
hits AS (
    SELECT coalesce(s.user_id, i.known_user, s.anonymous_id) AS visitor, s.step,
           CAST(s.timestamp AS BIGINT) AS ts
    FROM identified i RIGHT JOIN scoped s ON s.anonymous_id = i.anonymous_id
    WHERE coalesce(s.user_id, i.known_user, s.anonymous_id) IS NOT NULL
),
s1 AS (SELECT visitor, min(ts) AS t, min(ts) AS start FROM hits WHERE step = 1 GROUP BY visitor),
s2 AS (
    SELECT h.visitor, min(h.ts) AS t, min(p.start) AS start FROM hits h JOIN s1 p ON h.visitor = p.visitor
    WHERE h.step = 2 AND h.ts >= p.t AND h.ts < p.start + $window_days * 86400000000 GROUP BY h.visitor
),
s3 AS (
    SELECT h.visitor, min(h.ts) AS t, min(p.start) AS start FROM hits h JOIN s2 p ON h.visitor = p.visitor
    WHERE h.step = 3 AND h.ts >= p.t AND h.ts < p.start + $window_days * 86400000000 GROUP BY h.visitor
),
s4 AS (
    SELECT h.visitor, min(h.ts) AS t, min(p.start) AS start FROM hits h JOIN s3 p ON h.visitor = p.visitor
    WHERE h.step = 4 AND h.ts >= p.t AND h.ts < p.start + $window_days * 86400000000 GROUP BY h.visitor
),
s5 AS (
    SELECT h.visitor, min(h.ts) AS t, min(p.start) AS start FROM hits h JOIN s4 p ON h.visitor = p.visitor
    WHERE h.step = 5 AND h.ts >= p.t AND h.ts < p.start + $window_days * 86400000000 GROUP BY h.visitor
),
counts AS (
    SELECT 1 AS step, (SELECT count(*) FROM s1) AS visitors
    UNION ALL SELECT 2, (SELECT count(*) FROM s2)
    UNION ALL SELECT 3, (SELECT count(*) FROM s3)
    UNION ALL SELECT 4, (SELECT count(*) FROM s4)
    UNION ALL SELECT 5, (SELECT count(*) FROM s5)
)
SELECT c.step,
       n.s[c.step] AS event,
       c.visitors,
       round(CASE WHEN first_value(c.visitors) OVER (ORDER BY c.step) = 0 THEN 0.0
                  ELSE c.visitors * 1.0 / first_value(c.visitors) OVER (ORDER BY c.step) END, 4) AS conversion,
       round(CASE WHEN lag(c.visitors) OVER (ORDER BY c.step) IS NULL THEN 1.0
                  WHEN lag(c.visitors) OVER (ORDER BY c.step) = 0 THEN 0.0
                  ELSE c.visitors * 1.0 / lag(c.visitors) OVER (ORDER BY c.step) END, 4) AS step_conversion
FROM counts c CROSS JOIN names n
WHERE c.step <= cardinality(n.s)
ORDER BY c.step
