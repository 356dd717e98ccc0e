//! The audit log's event, as the application's operations take it: the
//! caller (who, from where) describes the event, and the operation records
//! it in the same transaction as its write.

pub use gatehouse_store::audit::{Actor, AuditEvent, Outcome, record};
