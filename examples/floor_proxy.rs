//! The least a reverse proxy on spa-bff's stack does, as a yardstick for benchmarks:
//! actix-web in, awc out (with spa-bff's TCP_NODELAY connector), one worker, the
//! request's headers forwarded with a fixed `Authorization`, the answer streamed back.
//! No session, no cookie, no log line, no header hygiene. `bench/profile floor`
//! measures it next to nginx and spa-bff: what it reaches is the ceiling of any proxy
//! built on these crates on that machine, and so what spa-bff can approach.
//!
//! `LISTEN=127.0.0.1:8090 UPSTREAM=http://127.0.0.1:8081 cargo run --release --example floor_proxy`

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use awc::http::header;

async fn forward(
    req: HttpRequest,
    body: web::Payload,
    client: web::Data<awc::Client>,
    upstream: web::Data<String>,
) -> HttpResponse {
    let url = format!("{}{}", upstream.get_ref(), req.uri());
    let mut out = client.request(req.method().clone(), url).no_decompress();
    for (name, value) in req.headers() {
        if name != header::HOST && name != header::CONNECTION {
            out = out.append_header((name.clone(), value.clone()));
        }
    }
    out = out.insert_header((header::AUTHORIZATION, "Bearer floor"));
    match out.send_stream(body).await {
        Ok(answer) => {
            let mut response = HttpResponse::build(answer.status());
            for (name, value) in answer.headers() {
                if name != header::CONNECTION && name != header::CONTENT_LENGTH {
                    response.append_header((name.clone(), value.clone()));
                }
            }
            response.streaming(answer)
        }
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let upstream = std::env::var("UPSTREAM").unwrap_or_else(|_| "http://127.0.0.1:8081".into());
    HttpServer::new(move || {
        let client = awc::Client::builder()
            .connector(spa_bff::net::awc_connector(1024))
            .disable_redirects()
            .finish();
        App::new()
            .app_data(web::Data::new(client))
            .app_data(web::Data::new(upstream.clone()))
            .default_service(web::to(forward))
    })
    .workers(1)
    .tcp_nodelay(true)
    .bind(listen)?
    .run()
    .await
}
