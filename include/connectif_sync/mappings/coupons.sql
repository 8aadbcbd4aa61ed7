-- Codes not yet handed to Connectif. Marking them used once Connectif confirmed is done by coupons.py.
SELECT id, coupon_set_id, code FROM coupon_pool WHERE status = 'unused'
