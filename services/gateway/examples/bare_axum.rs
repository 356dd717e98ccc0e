//! The framework's own ceiling for `bench/load/run`: axum's hello-world, with
//! the same runtime (multi-threaded Tokio) and allocator as `gatehouse`, no
//! layers, no state. Every gateway figure is also reported against it.
//!
//! `cargo run --release -p gatehouse-gateway --example bare_axum -- 127.0.0.1:PORT`
#![allow(clippy::print_stderr, reason = "a bench tool reports its own failures")]

use axum::Router;
use axum::routing::get;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8099".to_owned());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bare_axum: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async {
        let app = Router::new().route("/", get(|| async { "ok" }));
        match tokio::net::TcpListener::bind(&listen).await {
            Ok(listener) => {
                if let Err(e) = axum::serve(listener, app).await {
                    eprintln!("bare_axum: {e}");
                }
            }
            Err(e) => eprintln!("bare_axum: cannot listen on {listen}: {e}"),
        }
    });
}
