mod common;
use common::*;
use std::time::Instant;

#[tokio::test]
async fn probe() {
    let (app, _) = app();
    for (name, doc) in [
        ("selfcycle2", "{ ...F } fragment F on Query { ...F ...F }".to_string()),
        ("chain40", {
            let mut s = String::from("{ ...F0 }");
            for i in 0..40 { s += &format!(" fragment F{i} on Query {{ ...F{} }}", i + 1); }
            s += " fragment F40 on Query { renderId }";
            s
        }),
    ] {
        let t = Instant::now();
        let r = send(&app, query("/graphql/nocache", None, &doc)).await;
        eprintln!("{name}: {} {} {:?} {}", r.status, r.x_cache(), t.elapsed(), r.body.to_string().chars().take(200).collect::<String>());
    }
    for depth in [16, 18, 20, 22] {
        let mut s = String::from("{ ...F0 }");
        for i in 0..depth { s += &format!(" fragment F{i} on Query {{ ...F{n} ...F{n} }}", n = i + 1); }
        s += &format!(" fragment F{depth} on Query {{ renderId }}");
        let t = Instant::now();
        let r = send(&app, query("/graphql/nocache", None, &s)).await;
        eprintln!("tree{depth}: {} {} {:?} {}", r.status, r.x_cache(), t.elapsed(), r.body.to_string().chars().take(200).collect::<String>());
    }
    for depth in [16, 18, 20, 22] {
        let mut s = String::from("{ ...F0 }");
        for i in 0..depth { s += &format!(" fragment F{i} on Query {{ ...F{n} ...F{n} }}", n = i + 1); }
        s += &format!(" fragment F{depth} on Query {{ ...F0 }}");
        let t = Instant::now();
        let r = send(&app, query("/graphql/nocache", None, &s)).await;
        eprintln!("cyctree{depth}: {} {} {:?} {}", r.status, r.x_cache(), t.elapsed(), r.body.to_string().chars().take(200).collect::<String>());
    }
}
