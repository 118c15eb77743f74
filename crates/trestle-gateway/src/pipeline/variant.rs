//! Variant and prompt (docs/experiments.md, docs/prompts.md): the request's experiment
//! variant (sticky by its unit), the prompt version that variant or the route names, rendered
//! with the request's `prompt_variables` into its messages, and the variant's parameters.

use std::sync::Arc;

use serde_json::Value;
use trestle_core::experiment::PromptRef;
use trestle_core::openai::ChatRequest;

use super::ingress::Identity;
use crate::error::GatewayError;
use crate::experiments::Experiment;
use crate::runtime::{Route, Runtime, Target};
use crate::state::AppState;

/// What the step decided for one request.
#[derive(Default)]
pub struct Applied {
    pub experiment: Option<Arc<Experiment>>,
    pub variant: Option<String>,
    /// `name@N` of the rendered prompt version.
    pub prompt: Option<String>,
    /// The variant's own targets, if it has them.
    pub targets: Option<Vec<Arc<Target>>>,
    /// The cache key's prompt-version and variant slot.
    pub cache_scope: String,
}

pub fn apply(
    state: &AppState,
    runtime: &Runtime,
    route: &Route,
    identity: &Identity,
    req: &mut ChatRequest,
) -> Result<Applied, GatewayError> {
    let variables = match req.extra.remove("prompt_variables") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(other) => {
            return Err(GatewayError::invalid(
                format!("`prompt_variables` is an object of variables, not {other}"),
                Some("prompt_variables"),
            ));
        }
    };
    // An explicit version (evals of a candidate, replays): no experiment assignment.
    let pinned = match req.extra.remove("prompt_version") {
        None | Some(Value::Null) => None,
        Some(Value::String(v)) => {
            let r = PromptRef::parse(&v)
                .map_err(|e| GatewayError::invalid(e, Some("prompt_version")))?;
            runtime
                .prompts
                .check(&r)
                .map_err(|e| GatewayError::invalid(e, Some("prompt_version")))?;
            Some(r)
        }
        Some(other) => {
            return Err(GatewayError::invalid(
                format!(
                    "`prompt_version` is a string like \"name@2\" or \"name:canary\", not {other}"
                ),
                Some("prompt_version"),
            ));
        }
    };
    let mut out = Applied::default();
    let mut prompt_ref = pinned.clone();
    if pinned.is_none()
        && let Some(e) = runtime.experiments.get(&route.name)
        && let Some(unit) = e.unit_id(
            identity.user_id.as_deref(),
            identity.conversation_id.as_deref(),
            &identity.trace_id,
        )
    {
        let mut i = e.assign(unit);
        if state.experiments.is_stopped(&e.name, &e.variants[i].name) {
            i = e.control;
        }
        let v = &e.variants[i];
        prompt_ref = v.prompt.clone();
        out.targets = v.targets.clone();
        for (k, val) in &v.params {
            set_param(req, k, val);
        }
        out.variant = Some(v.name.clone());
        out.experiment = Some(e.clone());
    }
    let prompt_ref = match prompt_ref {
        Some(p) => Some(p),
        None => route
            .config
            .prompt
            .as_deref()
            .map(PromptRef::parse)
            .transpose()
            .map_err(GatewayError::Internal)?,
    };
    match prompt_ref {
        Some(r) => {
            let prompt = runtime.prompts.by_name.get(r.name()).ok_or_else(|| {
                GatewayError::Internal(format!("prompt {} is not loaded", r.name()))
            })?;
            let number = match &r {
                PromptRef::Version(_, n) => *n,
                PromptRef::Label(name, label) => state
                    .prompt_labels
                    .get(name, label)
                    .or_else(|| prompt.labels.get(label).copied())
                    .ok_or_else(|| GatewayError::Internal(format!("prompt {name} has no label `{label}`; set it in the file's [labels] or with `trestle prompt promote`")))?,
            };
            let rendered = prompt.render(number, variables.as_ref())?;
            out.prompt = Some(rendered.id.clone());
            crate::prompts::apply(req, rendered);
        }
        None if variables.is_some() => {
            return Err(GatewayError::invalid(
                format!(
                    "route `{}` has no prompt, so `prompt_variables` has nothing to fill",
                    route.name
                ),
                Some("prompt_variables"),
            ));
        }
        None => {}
    }
    if out.prompt.is_some() || out.variant.is_some() {
        out.cache_scope = format!(
            "{}|{}",
            out.prompt.as_deref().unwrap_or(""),
            out.variant.as_deref().unwrap_or("")
        );
    }
    Ok(out)
}

/// Sets a variant's parameter on the request (it wins over the client's: it is the
/// treatment).
fn set_param(req: &mut ChatRequest, key: &str, v: &Value) {
    match key {
        "temperature" => req.temperature = v.as_f64(),
        "top_p" => req.top_p = v.as_f64(),
        "max_tokens" => {
            req.max_tokens = v.as_u64().map(|n| n as u32);
            req.max_completion_tokens = None;
        }
        _ => {
            req.extra.insert(key.to_string(), v.clone());
        }
    }
}
