//! The demo's configuration file holds the demo's built-in setup: the two make the same
//! layer, and the file's layer serves the demo.

#[allow(dead_code)]
#[path = "../../examples/forum/app.rs"]
mod app;
#[path = "../../examples/forum/schema.rs"]
mod schema;
mod support;

use scoped_cache::config::Config;
use serde_json::json;
use support::*;

const SECRET: &str = "end-to-end-test-secret-of-32-bytes";

fn env(name: &str) -> Option<String> {
    (name == "JWT_SECRET").then(|| SECRET.to_owned())
}

fn from_file() -> scoped_cache::ScopedCacheLayerBuilder {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/forum/forum.toml");
    let config = Config::from_file(path).unwrap();
    app::with_schema(config.builder_with(env).unwrap())
}

#[test]
fn the_file_and_the_code_configure_the_same_layer() {
    let from_code = app::builder(app::hmac_verifier(SECRET.as_bytes()));
    assert_eq!(format!("{:?}", from_file()), format!("{from_code:?}"));
}

#[tokio::test]
async fn the_files_layer_serves_the_demo() {
    let layer = from_file().build().unwrap();
    let addr = serve(app::router(schema::Forum::seeded(), layer)).await;
    let alice = app::mint(
        SECRET.as_bytes(),
        "alice",
        "Alice",
        "member",
        std::time::Duration::from_secs(600),
    );
    let ask = || {
        post(
            addr,
            "/graphql",
            Some(&alice),
            json!({ "query": "{ me { id } }" }),
        )
    };
    assert_eq!(ask().await.x_cache(), "MISS");
    assert_eq!(ask().await.x_cache(), "HIT");
}
