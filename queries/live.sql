-- title: Live visitors
-- description: Visitors and page views received in the last few minutes.
-- definition: distinct coalesce(user_id, anonymous_id) over events received (received_at, the server's clock) in the last `minutes` minutes.
-- param: source string = * : one source, or * for all
-- param: minutes int(1..60) = 5 : how far back
SELECT count(DISTINCT coalesce(user_id, anonymous_id)) AS visitors,
       coalesce(sum(CASE WHEN type = 'page' THEN 1 ELSE 0 END), 0) AS pageviews,
       count(*) AS events
FROM events
WHERE CAST(received_at AS BIGINT) >= (to_unixtime(now()) - $minutes * 60) * 1000000
  AND ($source = '*' OR source = $source)
