//! Synthetic events (to be written).
