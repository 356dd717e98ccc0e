//! End-to-end tests live in `e2e/` (one test binary) and drive the real
//! `gatehouse` and `demo-upstream` binaries over HTTP; browser tests will live
//! in `browser/`. This library is empty on purpose.
