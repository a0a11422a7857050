//! The orders API over gRPC: a tonic `Orders` service (and a `Reports` one) served by
//! [`OrdersApi::router`](crate::OrdersApi::router) on the same port, behind the same layers as the
//! HTTP routes — trace context, per-IP caps, load shedding, rate limit, per-principal caps, and
//! idempotency for `CreateOrder`. Every rejection reaches a gRPC client as a gRPC status
//! (docs/grpc.md has the mapping); the same layers still answer HTTP requests with problem+json.
//!
//! The proto (`examples/proto/orders.proto`) is compiled at build time by protox and
//! tonic-prost-build: no system `protoc`.

use crate::{principal, Db};
use std::time::Duration;
use tonic::{Request, Response, Status};

/// The generated messages, services and clients of `orders.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("orders.v1");
}

use pb::orders_server::{Orders, OrdersServer};
use pb::reports_server::{Reports, ReportsServer};

/// `orders.v1.Orders` on the order book.
#[derive(Clone)]
pub(crate) struct GrpcOrders {
    pub(crate) db: Db,
}

#[tonic::async_trait]
impl Orders for GrpcOrders {
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        if self.db.pg.is_some() {
            return Err(Status::unimplemented(
                "gRPC orders are kept in the in-memory book; run orders-api without --postgres",
            ));
        }
        let owner = principal(request.metadata().as_ref());
        let new = request.into_inner();
        if new.quantity == 0 || new.sku.is_empty() {
            return Err(Status::invalid_argument(
                "sku must be set and quantity at least 1",
            ));
        }
        let order = crate::create_in_memory(&self.db, owner, new.sku, new.quantity).await;
        let mut res = Response::new(pb::Order {
            id: order.id.clone(),
            owner: order.owner,
            sku: order.sku,
            quantity: order.quantity,
        });
        if let Ok(v) = order.id.parse() {
            res.metadata_mut().insert("x-order-id", v);
        }
        Ok(res)
    }
}

/// `orders.v1.Reports`: a slow read, for the load and trace examples.
#[derive(Clone, Default)]
pub(crate) struct GrpcReports;

#[tonic::async_trait]
impl Reports for GrpcReports {
    async fn slow_report(
        &self,
        request: Request<pb::SlowReportRequest>,
    ) -> Result<Response<pb::Report>, Status> {
        let (trace_id, request_id) = request
            .extensions()
            .get::<trace_ctx::TraceContext>()
            .map(|c| (c.trace_id().to_string(), c.request_id().to_string()))
            .unwrap_or_default();
        let millis = request.into_inner().millis.min(10_000);
        tokio::time::sleep(Duration::from_millis(u64::from(millis))).await;
        Ok(Response::new(pb::Report {
            trace_id,
            request_id,
        }))
    }
}

/// The tonic routes: `Orders` (idempotent, under `idempotency`) and `Reports`. No fallback of
/// their own: a call to an unknown service meets the router's 404, which the trace layer turns
/// into a gRPC `NOT_FOUND` (an unknown method of a known service is tonic's `UNIMPLEMENTED`).
pub(crate) fn routes<S: idem_core::IdempotencyStore>(
    db: Db,
    idempotency: idem_core::IdempotencyLayer<S>,
) -> axum::Router {
    use tonic::server::NamedService;
    use tower::ServiceBuilder;
    let to_tonic = |req: http::Request<axum::body::Body>| req.map(tonic::body::Body::new);
    let orders = ServiceBuilder::new()
        .layer(idempotency)
        .map_request(to_tonic)
        .service(OrdersServer::new(GrpcOrders { db }));
    let reports = ServiceBuilder::new()
        .map_request(to_tonic)
        .service(ReportsServer::new(GrpcReports));
    axum::Router::new()
        .route_service(
            &format!("/{}/{{*method}}", OrdersServer::<GrpcOrders>::NAME),
            orders,
        )
        .route_service(
            &format!("/{}/{{*method}}", ReportsServer::<GrpcReports>::NAME),
            reports,
        )
}
