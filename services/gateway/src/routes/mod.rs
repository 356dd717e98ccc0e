//! HTTP handlers, one module per area, named noun-first (`sessions_list`).

pub mod health;
