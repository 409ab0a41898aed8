//! The queries shipped in `queries/`: the demo runs them, the benches measure them.

/// The shipped queries, by name.
pub const SHIPPED_QUERIES: [(&str, &str); 4] = [
    (
        "settlement_per_minute",
        include_str!("../../queries/settlement_per_minute.sql"),
    ),
    (
        "card_velocity",
        include_str!("../../queries/card_velocity.sql"),
    ),
    (
        "card_sessions",
        include_str!("../../queries/card_sessions.sql"),
    ),
    ("card_alerts", include_str!("../../queries/card_alerts.sql")),
];

/// The library's rules that take parameters (`SET name = '…';` before the query, `${name}` in
/// it): plan the SELECT of `query_file::parse_replay_query`, which puts them in place. Rules
/// that read files of their own (the reference tables of `blocklisted.sql` and
/// `settlement_daily.sql`) are not here: the demo
/// and the bench run these as they are, without the files.
pub const LIBRARY_QUERIES: [(&str, &str); 14] = [
    (
        "merchant_volume_spike",
        include_str!("../../queries/merchant_volume_spike.sql"),
    ),
    (
        "decline_rate_spike",
        include_str!("../../queries/decline_rate_spike.sql"),
    ),
    (
        "device_card_fanout",
        include_str!("../../queries/device_card_fanout.sql"),
    ),
    (
        "card_testing_burst",
        include_str!("../../queries/card_testing_burst.sql"),
    ),
    (
        "merchant_enumeration",
        include_str!("../../queries/merchant_enumeration.sql"),
    ),
    (
        "card_velocity_per_event",
        include_str!("../../queries/card_velocity_per_event.sql"),
    ),
    (
        "small_then_large",
        include_str!("../../queries/small_then_large.sql"),
    ),
    (
        "refund_after_chargeback",
        include_str!("../../queries/refund_after_chargeback.sql"),
    ),
    (
        "amount_distribution_shift",
        include_str!("../../queries/amount_distribution_shift.sql"),
    ),
    (
        "uncaptured_authorizations",
        include_str!("../../queries/uncaptured_authorizations.sql"),
    ),
    (
        "country_mismatch_high_risk",
        include_str!("../../queries/country_mismatch_high_risk.sql"),
    ),
    (
        "dispute_ratio",
        include_str!("../../queries/dispute_ratio.sql"),
    ),
    (
        "first_card_use_large",
        include_str!("../../queries/first_card_use_large.sql"),
    ),
    (
        "new_country_mix",
        include_str!("../../queries/new_country_mix.sql"),
    ),
];
