//! `GET /openapi.json`: the OpenAPI document, generated with utoipa from
//! the handlers' own annotations as `api::routes` registers them, so that a
//! route cannot be served without being documented or the other way round.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::{Extension, Json};
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{AdditionalProperties, Object, Schema};
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr, ResponseBuilder,
};

use super::problem::PROBLEM_JSON;

/// What the document says beside its paths.
pub fn base() -> OpenApi {
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Ward")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Runs WebAssembly task actions as durable executions. Every error is \
                     application/problem+json (schema Problem); a method a path does not list \
                     is a 405 with an Allow header.",
                ))
                .build(),
        )
        .build()
}

/// Completes the generated document: what every operation may answer (an
/// internal error, in problem+json like every other), and flattened
/// request shapes made open where they extend a response (see
/// [`open_flattened`]).
pub fn finish(mut doc: OpenApi) -> OpenApi {
    if let Some(components) = doc.components.as_mut() {
        open_flattened(&mut components.schemas);
    }
    let internal = ResponseBuilder::new()
        .description("An internal error; its details are in the server's log")
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build();
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    };
    let unauthorized = problem("No token, or one unknown, expired or revoked");
    let forbidden = problem("The token lacks the scope this operation needs (named in `detail`)");
    let too_many =
        problem("The namespace is over its share of triggers per second; see Retry-After");
    if let Some(components) = doc.components.as_mut() {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        components.security_schemes.insert(
            "bearer".into(),
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
    doc.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
    for (path, item) in doc.paths.paths.iter_mut() {
        let public = matches!(path.as_str(), "/api/v1/healthz" | "/api/v1/openapi.json");
        // Triggers (a namespace's rate) and followed streams (a token's).
        let limited = path.starts_with("/api/v1/tasks/") && path.ends_with("/executions")
            || path.ends_with("/replay")
            || path.starts_with("/api/v1/webhooks/")
            || path.ends_with("/logs")
            || path.ends_with("/events");
        let operations: [&mut Option<Operation>; 8] = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for op in operations.into_iter().flatten() {
            let responses = &mut op.responses.responses;
            responses
                .entry("500".into())
                .or_insert_with(|| internal.clone().into());
            if public {
                op.security = Some(vec![
                    utoipa::openapi::security::SecurityRequirement::default(),
                ]);
            } else {
                responses
                    .entry("401".into())
                    .or_insert_with(|| unauthorized.clone().into());
                responses
                    .entry("403".into())
                    .or_insert_with(|| forbidden.clone().into());
            }
            if limited {
                responses
                    .entry("429".into())
                    .or_insert_with(|| too_many.clone().into());
            }
        }
    }
    doc
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "hosts",
    responses((status = 200, description = "The OpenAPI document of this API", body = Object)))]
pub async fn document(Extension(doc): Extension<Arc<OpenApi>>) -> Json<Arc<OpenApi>> {
    Json(doc)
}

/// A `#[serde(flatten)]` of a type that denies unknown fields (a Task is
/// its TaskSpec plus id and version) is generated as `allOf` with a
/// reference to a closed schema, which nothing with the extra fields can
/// fit. Inlines such references with the closed schema opened.
fn open_flattened(schemas: &mut BTreeMap<String, RefOr<Schema>>) {
    let closed: BTreeMap<String, Object> = schemas
        .iter()
        .filter_map(|(name, schema)| match schema {
            RefOr::T(Schema::Object(o))
                if matches!(
                    o.additional_properties.as_deref(),
                    Some(AdditionalProperties::FreeForm(false))
                ) =>
            {
                let mut open = o.clone();
                open.additional_properties = None;
                Some((format!("#/components/schemas/{name}"), open))
            }
            _ => None,
        })
        .collect();
    for schema in schemas.values_mut() {
        if let RefOr::T(Schema::AllOf(all)) = schema {
            for item in &mut all.items {
                if let RefOr::Ref(r) = item
                    && let Some(open) = closed.get(&r.ref_location)
                {
                    *item = RefOr::T(Schema::Object(open.clone()));
                }
            }
        }
    }
}
