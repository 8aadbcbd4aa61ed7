-- MySQL/MariaDB variant of products.sql (used there instead of it): CONCAT for ||, CHAR and SIGNED in casts.
WITH RECURSIVE category_path (id, path) AS (
    SELECT id, CAST(name AS CHAR(1000)) FROM categories WHERE parent_id IS NULL
    UNION ALL
    SELECT c.id, CAST(CONCAT(cp.path, '/', c.name) AS CHAR(1000))
    FROM categories c JOIN category_path cp ON c.parent_id = cp.id
)
SELECT p.id, p.sku, p.name, p.url, p.price, p.price_without_vat, p.original_price, p.discount_percent,
       p.image_url, p.description, p.brand, cp.path AS category_path, p.tags, p.stock,
       CASE WHEN p.stock IS NULL THEN NULL
            WHEN CAST(p.stock AS SIGNED) > 0 THEN 'instock' ELSE 'outofstock' END AS availability,
       p.rating, p.published_at, p.updated_at
FROM products p
LEFT JOIN category_path cp ON cp.id = p.category_id
