//! OTLP/HTTP trace ingest (docs/observability.md): `POST /v1/traces` takes an app's
//! OpenTelemetry spans — agent steps, tool calls, retrieval — in the protobuf or the JSON
//! encoding, so an OpenTelemetry exporter pointed at Trestle's base URL just works. Spans are
//! kept in the trace store (`app_spans`) and join the gateway's own by trace id (the app
//! propagates `traceparent` to Trestle) and by conversation id (`gen_ai.conversation.id` or
//! `session.id`). `GET /v1/traces/{id}` answers them with the gateway's requests.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use rusqlite::{Connection, params};
use serde_json::{Map, Value, json};

use crate::error::GatewayError;
use crate::state::SharedState;

/// One span of the app's.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: i32,
    pub service: Option<String>,
    pub start_ms: f64,
    pub end_ms: f64,
    pub status_code: i32,
    pub status_message: String,
    pub attributes: Map<String, Value>,
    pub events: Vec<Value>,
    pub conversation_id: Option<String>,
}

/// Nanoseconds since the epoch in milliseconds, exact to the microsecond (an f64 of the
/// nanoseconds would not be).
fn ms(nanos: u64) -> f64 {
    (nanos / 1_000) as f64 / 1_000.0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn any_json(v: &AnyValue) -> Value {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(any_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(attributes(&kv.values)),
        Some(any_value::Value::BytesValue(b)) => json!(hex(b)),
        None => Value::Null,
    }
}

fn attributes(kvs: &[KeyValue]) -> Map<String, Value> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map_or(Value::Null, any_json),
            )
        })
        .collect()
}

/// Flattens a request into spans; spans without a valid trace or span id are refused.
pub fn spans(req: ExportTraceServiceRequest) -> Result<Vec<AppSpan>, String> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let resource = rs
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource
            .get("service.name")
            .and_then(Value::as_str)
            .map(String::from);
        for ss in rs.scope_spans {
            for s in ss.spans {
                if s.trace_id.len() != 16 || s.span_id.len() != 8 {
                    return Err(format!(
                        "span `{}`: traceId must be 16 bytes and spanId 8 (32 and 16 hex digits in JSON)",
                        s.name
                    ));
                }
                let attrs = attributes(&s.attributes);
                let conversation_id = ["gen_ai.conversation.id", "session.id"]
                    .iter()
                    .find_map(|k| attrs.get(*k).and_then(Value::as_str))
                    .map(String::from);
                let (code, message) = s
                    .status
                    .map_or((0, String::new()), |st| (st.code, st.message));
                out.push(AppSpan {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: (!s.parent_span_id.is_empty()).then(|| hex(&s.parent_span_id)),
                    name: s.name,
                    kind: s.kind,
                    service: service.clone(),
                    start_ms: ms(s.start_time_unix_nano),
                    end_ms: ms(s.end_time_unix_nano),
                    status_code: code,
                    status_message: message,
                    events: s.events.iter().map(|e| json!({"name": e.name, "time_ms": ms(e.time_unix_nano), "attributes": attributes(&e.attributes)})).collect(),
                    attributes: attrs,
                    conversation_id,
                });
            }
        }
    }
    Ok(out)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS app_spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    service TEXT,
    start_ms REAL NOT NULL,
    end_ms REAL NOT NULL,
    status_code INTEGER NOT NULL,
    status_message TEXT,
    attributes TEXT NOT NULL,
    events TEXT NOT NULL,
    conversation_id TEXT,
    tenant TEXT,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS app_spans_conversation ON app_spans (conversation_id) WHERE conversation_id IS NOT NULL;
";

/// Where ingested spans go, and what happened to them.
pub struct SpanStore {
    place: Option<Place>,
    pub received: AtomicU64,
    pub stored: AtomicU64,
    pub failed: AtomicU64,
}

enum Place {
    Sqlite(Mutex<Connection>),
    /// The `app_spans` table of the PostgreSQL trace store (its migrations make it).
    Postgres(std::sync::Arc<crate::db::PgPool>),
}

fn open_sqlite(path: &std::path::Path) -> Option<Connection> {
    let c = Connection::open(path).ok()?;
    c.busy_timeout(std::time::Duration::from_secs(5)).ok()?;
    c.pragma_update(None, "journal_mode", "WAL").ok()?;
    c.execute_batch(SCHEMA).ok()?;
    // Spans stored before keys existed have no tenant.
    let has_tenant = c
        .prepare("SELECT 1 FROM pragma_table_info('app_spans') WHERE name = 'tenant'")
        .and_then(|mut st| st.exists([]))
        .ok()?;
    if !has_tenant {
        c.execute_batch("ALTER TABLE app_spans ADD COLUMN tenant TEXT")
            .ok()?;
    }
    Some(c)
}

impl SpanStore {
    pub fn new(db: Option<crate::db::Db>) -> Self {
        let place = db.and_then(|db| match db {
            crate::db::Db::Sqlite(p) => open_sqlite(&p).map(|c| Place::Sqlite(Mutex::new(c))),
            crate::db::Db::Postgres(pool) => Some(Place::Postgres(pool)),
        });
        SpanStore {
            place,
            received: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Writes spans in one transaction (a span sent twice is kept once), as the tenant's
    /// when a key sent them. Blocks: call it off the async runtime.
    pub fn write(&self, spans: &[AppSpan], tenant: Option<&str>) -> Result<(), String> {
        match self
            .place
            .as_ref()
            .ok_or("OTLP ingest needs the trace store ([store] enabled)")?
        {
            Place::Sqlite(conn) => write_sqlite(conn, spans, tenant),
            Place::Postgres(pool) => pool
                .with(|client| crate::store::write_app_spans(client, spans, tenant))
                .map_err(|e| e.to_string()),
        }
    }
}

fn write_sqlite(
    conn: &Mutex<Connection>,
    spans: &[AppSpan],
    tenant: Option<&str>,
) -> Result<(), String> {
    let mut conn = conn.lock().map_err(|_| "span store poisoned".to_string())?;
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    {
        let mut st = tx
            .prepare_cached("INSERT OR REPLACE INTO app_spans (trace_id, span_id, parent_span_id, name, kind, service, start_ms, end_ms, status_code, status_message, attributes, events, conversation_id, tenant) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)")
            .map_err(|e| e.to_string())?;
        for s in spans {
            st.execute(params![
                s.trace_id,
                s.span_id,
                s.parent_span_id,
                s.name,
                s.kind,
                s.service,
                s.start_ms,
                s.end_ms,
                s.status_code,
                s.status_message,
                Value::Object(s.attributes.clone()).to_string(),
                Value::Array(s.events.clone()).to_string(),
                s.conversation_id,
                tenant
            ])
            .map_err(|e| e.to_string())?;
        }
    }
    tx.commit().map_err(|e| e.to_string())
}

/// The app spans of a trace, oldest first, as the trace API answers them.
pub fn read(conn: &Connection, trace_id: &str) -> rusqlite::Result<Vec<Value>> {
    read_where(conn, "trace_id = ?1", trace_id)
}

/// The spans of a conversation: those with its id, and those of traces whose gateway
/// requests carry it; oldest first.
pub fn read_conversation(conn: &Connection, conversation_id: &str) -> rusqlite::Result<Vec<Value>> {
    read_where(
        conn,
        "conversation_id = ?1 OR trace_id IN (SELECT trace_id FROM requests WHERE conversation_id = ?1)",
        conversation_id,
    )
}

fn read_where(conn: &Connection, clause: &str, key: &str) -> rusqlite::Result<Vec<Value>> {
    if conn.prepare("SELECT 1 FROM app_spans LIMIT 0").is_err() {
        return Ok(Vec::new());
    }
    let mut st = conn.prepare_cached(&format!(
        "SELECT span_id, parent_span_id, name, kind, service, start_ms, end_ms, status_code, status_message, attributes, events, conversation_id, trace_id, tenant
         FROM app_spans WHERE {clause} ORDER BY start_ms LIMIT 5000"
    ))?;
    let rows = st.query_map([key], |r| {
        let attributes: String = r.get(9)?;
        let events: String = r.get(10)?;
        Ok(json!({
            "span_id": r.get::<_, String>(0)?, "parent_span_id": r.get::<_, Option<String>>(1)?, "name": r.get::<_, String>(2)?,
            "kind": r.get::<_, i32>(3)?, "service": r.get::<_, Option<String>>(4)?, "start_ms": r.get::<_, f64>(5)?,
            "end_ms": r.get::<_, f64>(6)?, "status_code": r.get::<_, i32>(7)?, "status_message": r.get::<_, Option<String>>(8)?,
            "attributes": serde_json::from_str::<Value>(&attributes).unwrap_or_default(),
            "events": serde_json::from_str::<Value>(&events).unwrap_or_default(),
            "conversation_id": r.get::<_, Option<String>>(11)?,
            "trace_id": r.get::<_, String>(12)?,
            "tenant": r.get::<_, Option<String>>(13)?,
        }))
    })?;
    rows.collect()
}

/// Decodes a body by its content type: `application/x-protobuf` or `application/json`.
pub fn decode(
    content_type: &str,
    body: &[u8],
) -> Result<(ExportTraceServiceRequest, bool), GatewayError> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    match ct {
        "application/x-protobuf" | "application/protobuf" => {
            ExportTraceServiceRequest::decode(body)
                .map(|r| (r, false))
                .map_err(|e| {
                    GatewayError::invalid(
                        format!(
                            "the body is not an OTLP ExportTraceServiceRequest in protobuf: {e}"
                        ),
                        None,
                    )
                })
        }
        "application/json" | "" => serde_json::from_slice::<ExportTraceServiceRequest>(body)
            .map(|r| (r, true))
            .map_err(|e| {
                GatewayError::invalid(
                    format!("the body is not an OTLP ExportTraceServiceRequest in JSON: {e}"),
                    None,
                )
            }),
        other => Err(GatewayError::invalid(
            format!(
                "content type `{other}`: OTLP/HTTP sends application/x-protobuf or application/json"
            ),
            None,
        )),
    }
}

/// `POST /v1/traces`.
pub async fn ingest(
    State(state): State<SharedState>,
    caller: crate::auth::MaybeCaller,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let rt = state.runtime();
    let raw = match crate::pipeline::ingress::read_body(&headers, body, &rt.config.server).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (req, json_body) = match decode(ct, &raw) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let spans = match spans(req) {
        Ok(s) => s,
        Err(e) => return GatewayError::invalid(e, None).into_response(),
    };
    let n = spans.len() as u64;
    state.spans.received.fetch_add(n, Ordering::Relaxed);
    let s = state.clone();
    let tenant = caller.map(|c| c.0.key.tenant.clone());
    let written =
        tokio::task::spawn_blocking(move || s.spans.write(&spans, tenant.as_deref())).await;
    match written {
        Ok(Ok(())) => {
            state.spans.stored.fetch_add(n, Ordering::Relaxed);
            metrics::counter!("trestle_otlp_spans_total", "result" => "stored").increment(n);
        }
        other => {
            state.spans.failed.fetch_add(n, Ordering::Relaxed);
            metrics::counter!("trestle_otlp_spans_total", "result" => "failed").increment(n);
            let why = match other {
                Ok(Err(e)) => e,
                Err(e) => e.to_string(),
                Ok(Ok(())) => String::new(),
            };
            tracing::warn!(spans = n, "OTLP spans could not be stored: {why}");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"code": 14, "message": why})),
            )
                .into_response();
        }
    }
    let answer = ExportTraceServiceResponse {
        partial_success: None,
    };
    if json_body {
        (StatusCode::OK, axum::Json(json!({}))).into_response()
    } else {
        let mut r = (StatusCode::OK, answer.encode_to_vec()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_protobuf_give_the_same_spans() {
        let body = r#"{"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "support-agent"}}]},
            "scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "parentSpanId": "eee19b7ec3c1b173",
            "name": "tool.lookup_order", "kind": 1, "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661000000000",
            "attributes": [{"key": "gen_ai.conversation.id", "value": {"stringValue": "conv-9"}}, {"key": "order", "value": {"intValue": "42"}}],
            "status": {"code": 2, "message": "timeout"}}]}]}]}"#;
        let (req, is_json) = decode("application/json", body.as_bytes()).unwrap();
        assert!(is_json);
        let proto = req.encode_to_vec();
        let (again, _) = decode("application/x-protobuf", &proto).unwrap();
        let a = spans(req).unwrap();
        assert_eq!(a, spans(again).unwrap());
        let s = &a[0];
        assert_eq!(
            (s.trace_id.as_str(), s.span_id.as_str()),
            ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")
        );
        assert_eq!(s.conversation_id.as_deref(), Some("conv-9"));
        assert_eq!(s.service.as_deref(), Some("support-agent"));
        assert_eq!(s.end_ms - s.start_ms, 1000.0);
        assert_eq!((s.status_code, s.status_message.as_str()), (2, "timeout"));
        assert_eq!(s.attributes["order"], 42);
        assert!(decode("text/plain", b"x").is_err());
        assert!(decode("application/x-protobuf", b"\xff\xff").is_err());
    }
}
