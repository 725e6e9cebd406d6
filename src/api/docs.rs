//! The API's human-readable page, made once at start-up from the same
//! OpenAPI document `/api/v1/openapi.json` serves.

use askama::Template;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{OpenApi, RefOr};

use crate::web::{Nav, PROBLEM_KINDS, PROBLEM_TYPES};

#[derive(Template)]
#[template(path = "api/docs.html")]
struct DocsPage {
    nav: Option<Nav>,
    title: String,
    version: String,
    description: String,
    openapi_version: &'static str,
    operations: Vec<Op>,
    problem_types: &'static str,
    problems: &'static [(&'static str, u16, &'static str)],
}

struct Op {
    anchor: String,
    method: &'static str,
    path: String,
    summary: String,
    scopes: Vec<String>,
    /// Name, where (path, query, header), meaning.
    params: Vec<(String, &'static str, String)>,
    /// Status, meaning.
    responses: Vec<(String, String)>,
}

pub fn render(doc: &OpenApi) -> String {
    let mut operations = Vec::new();
    for (path, item) in &doc.paths.paths {
        let methods = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ];
        for (method, op) in methods {
            if let Some(op) = op {
                operations.push(describe(method, path, op));
            }
        }
    }
    let page = DocsPage {
        nav: None,
        title: doc.info.title.clone(),
        version: doc.info.version.clone(),
        description: doc.info.description.clone().unwrap_or_default(),
        openapi_version: "3.1",
        operations,
        problem_types: PROBLEM_TYPES,
        problems: &PROBLEM_KINDS,
    };
    page.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "the API page does not render");
        String::new()
    })
}

fn describe(method: &'static str, path: &str, op: &Operation) -> Op {
    let summary = op
        .description
        .clone()
        .or_else(|| op.summary.clone())
        .unwrap_or_default();
    let scopes = op
        .security
        .iter()
        .flatten()
        .flat_map(|req| {
            serde_json::to_value(req)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .into_iter()
                .flat_map(|o| {
                    o.into_iter()
                        .flat_map(|(_, v)| v.as_array().cloned().unwrap_or_default())
                })
                .filter_map(|s| s.as_str().map(str::to_owned))
        })
        .collect();
    let params = op
        .parameters
        .iter()
        .flatten()
        .map(|p| {
            let place = match p.parameter_in {
                ParameterIn::Path => "path",
                ParameterIn::Query => "query",
                ParameterIn::Header => "header",
                ParameterIn::Cookie => "cookie",
            };
            (
                p.name.clone(),
                place,
                p.description.clone().unwrap_or_default(),
            )
        })
        .collect();
    let responses = op
        .responses
        .responses
        .iter()
        .map(|(status, r)| {
            let meaning = match r {
                RefOr::T(r) => r.description.clone(),
                RefOr::Ref(r) => r.ref_location.clone(),
            };
            (status.clone(), meaning)
        })
        .collect();
    Op {
        anchor: format!(
            "{}-{}",
            method.to_lowercase(),
            path.trim_matches('/').replace(['/', '{', '}'], "-")
        ),
        method,
        path: path.to_owned(),
        summary,
        scopes,
        params,
        responses,
    }
}
