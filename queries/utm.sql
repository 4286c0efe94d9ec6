-- title: Campaigns (UTM)
-- description: Visitors and page views by utm_source, utm_medium and utm_campaign.
-- definition: page views carrying at least one of the three tags (from context.campaign or the page URL); visitors as in queries/README.md.
-- param: from timestamp = -30d : start of the range (inclusive)
-- param: to timestamp = now : end of the range (exclusive)
-- param: source string = * : one source, or * for all
-- param: limit int(1..10000) = 10 : rows to return
WITH scoped AS (
    SELECT * FROM events
    WHERE timestamp >= $from AND timestamp < $to AND ($source = '*' OR source = $source)
),
identified AS (
    SELECT anonymous_id, min(user_id) AS known_user FROM scoped
    WHERE anonymous_id IS NOT NULL AND user_id IS NOT NULL GROUP BY anonymous_id
),
visits AS (
    SELECT s.utm_source, s.utm_medium, s.utm_campaign,
           coalesce(s.user_id, i.known_user, s.anonymous_id) AS visitor
    FROM identified i RIGHT JOIN scoped s ON s.anonymous_id = i.anonymous_id
    WHERE s.type = 'page'
      AND (s.utm_source IS NOT NULL OR s.utm_medium IS NOT NULL OR s.utm_campaign IS NOT NULL)
)
SELECT coalesce(utm_source, '(none)') AS utm_source,
       coalesce(utm_medium, '(none)') AS utm_medium,
       coalesce(utm_campaign, '(none)') AS utm_campaign,
       count(DISTINCT visitor) AS visitors,
       count(*) AS pageviews
FROM visits
GROUP BY 1, 2, 3
ORDER BY visitors DESC, pageviews DESC, utm_source, utm_medium, utm_campaign
LIMIT $limit
