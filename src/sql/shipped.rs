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
