-- MySQL/MariaDB variant of purchases.sql (used there instead of it): CONCAT for ||, CHAR and SIGNED in casts.
WITH RECURSIVE category_path (id, path) AS (
    SELECT id, CAST(name AS CHAR(1000)) FROM categories WHERE parent_id IS NULL
    UNION ALL
    SELECT c.id, CAST(CONCAT(cp.path, '/', c.name) AS CHAR(1000))
    FROM categories c JOIN category_path cp ON c.parent_id = cp.id
)
SELECT o.id AS order_id, l.id AS line_id, o.order_number, o.ordered_at, o.updated_at, o.cart_id,
       o.payment_method, c.email, p.sku, p.name AS product_name, p.url, p.image_url, p.brand,
       cp.path AS category_path, l.unit_price, l.quantity, l.unit_price * l.quantity AS line_price
FROM orders o
JOIN customers c ON c.id = o.customer_id
JOIN order_lines l ON l.order_id = o.id
JOIN products p ON p.id = l.product_id
LEFT JOIN category_path cp ON cp.id = p.category_id
WHERE o.status = 'paid'
