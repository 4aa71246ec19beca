#[allow(dead_code)]
#[path = "../../examples/forum/schema.rs"]
mod schema;

use std::time::Instant;

fn bomb(levels: usize, width: usize, leaf: &str) -> String {
    let mut q = String::from("query { ...F0 }\n");
    for i in 0..levels {
        q.push_str(&format!("fragment F{i} on Query {{"));
        for _ in 0..width {
            q.push_str(&format!(" ...F{}", i + 1));
        }
        q.push_str(" }\n");
    }
    q.push_str(&format!("fragment F{levels} on Query {{ {leaf} }}\n"));
    q
}

const INTROSPECTION: &str = include_str!("/tmp/scratch/introspection.graphql");

#[tokio::test]
async fn measure() {
    let forum = schema::Forum::seeded();
    let s = schema::build(forum);
    for (levels, width) in [(10, 2), (14, 2), (16, 2), (18, 2), (20, 2), (10, 4)] {
        let q = bomb(levels, width, "renderId");
        let t = Instant::now();
        let r = s.execute(q.as_str()).await;
        println!("levels {levels} width {width} bytes {} -> {:?} errors {:?}", q.len(), t.elapsed(), r.errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>());
    }
    let t = Instant::now();
    let r = s.execute(INTROSPECTION).await;
    println!("introspection {:?} errors {:?}", t.elapsed(), r.errors.len());
    for depth in (8..20).rev() {
        let s = async_graphql::Schema::build(schema::Query, schema::Mutation, async_graphql::EmptySubscription).data(schema::Forum::seeded()).limit_depth(depth).finish();
        let r = s.execute(INTROSPECTION).await;
        if !r.errors.is_empty() { println!("introspection fails at limit_depth {depth}"); break; }
    }
    for c in [100usize, 200, 300, 400, 500, 600, 800, 1000, 2000] {
        let s = async_graphql::Schema::build(schema::Query, schema::Mutation, async_graphql::EmptySubscription).data(schema::Forum::seeded()).limit_complexity(c).finish();
        let r = s.execute(INTROSPECTION).await;
        println!("complexity {c}: errors {}", r.errors.len());
    }
    for d in (4..20).rev() {
        let s = async_graphql::Schema::build(schema::Query, schema::Mutation, async_graphql::EmptySubscription).data(schema::Forum::seeded()).limit_recursive_depth(d).finish();
        let r = s.execute(INTROSPECTION).await;
        if !r.errors.is_empty() { println!("introspection fails at recursive depth {d}"); break; }
    }
}
