-- title: Events per day
-- description: Number of events and distinct visitors per UTC day and event type.
-- parameters: none yet (named parameters arrive with the reports feature)
-- definition: visitors = distinct coalesce(user_id, anonymous_id)
SELECT
    event_date,
    type,
    count(*) AS events,
    count(DISTINCT coalesce(user_id, anonymous_id)) AS visitors
FROM events
GROUP BY event_date, type
ORDER BY event_date, type;
