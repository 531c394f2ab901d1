//! Traces: the gateway, told by the standard OTEL_* variables, exports its spans over OTLP/gRPC
//! to a real receiver (an in-test server on the OTLP protobufs): each RPC is a server span
//! that continues the caller's W3C trace, and each Amazon Connect call inside it is a client
//! span under it.

use crate::support::gateway::*;
use crate::support::procs::{unique_prefix, GatewayProc, REDIS};
use connect_chat_gateway::pb;
use connect_chat_gateway::sim::{SimConfig, Simulator};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_continue_the_callers_trace_and_connect_calls_are_their_children() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let server = receiver.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    let sim = Simulator::start(SimConfig {
        agent: fast_agent(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let endpoint = format!("http://{otlp}");
    let gw = GatewayProc::spawn_with_env(
        &sim.endpoint(),
        REDIS,
        &unique_prefix("traces"),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    let mut client = gw.client().await;
    let chat = start_chat(&mut client, "Ada").await;
    // The caller's own trace, handed over as W3C trace context.
    let trace_id: [u8; 16] = rand::random();
    let parent_id: [u8; 8] = rand::random();
    let mut request = tonic::Request::new(pb::SendMessageRequest {
        chat: Some(chat_ref(&chat)),
        content: "traced".into(),
        ..Default::default()
    });
    let traceparent = format!("00-{}-{}-01", hex::encode(trace_id), hex::encode(parent_id));
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    client.send_message(request).await.expect("SendMessage");

    let find = |name: &str, parent: &[u8]| {
        receiver
            .spans
            .lock()
            .unwrap()
            .iter()
            .find(|(_, s)| s.name == name && s.trace_id == trace_id && s.parent_span_id == parent)
            .cloned()
    };
    wait_for("the RPC's span in the caller's trace", || {
        find("chatgateway.v1.ChatGateway/SendMessage", &parent_id).is_some()
    })
    .await;
    let (service, rpc) = find("chatgateway.v1.ChatGateway/SendMessage", &parent_id).unwrap();
    assert_eq!(rpc.kind, SpanKind::Server as i32);
    assert!(service.contains("connect-chat-gateway"), "{service}");
    wait_for("the Connect call's span under the RPC's", || {
        find("SendMessage", &rpc.span_id).is_some()
    })
    .await;
    let (_, upstream) = find("SendMessage", &rpc.span_id).unwrap();
    assert_eq!(upstream.kind, SpanKind::Client as i32);
    assert!(upstream.start_time_unix_nano >= rpc.start_time_unix_nano);
    assert!(upstream.end_time_unix_nano <= rpc.end_time_unix_nano);
    drop(gw);
    sim.shutdown().await;
}
