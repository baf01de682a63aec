//! Node API (placeholder, being written).
