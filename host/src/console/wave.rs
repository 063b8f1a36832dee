//! Calling a component's exported functions from the console, as IEx calls
//! a module's functions: `todo.add-entry("production_list", {date:
//! "2023-01-01", title: "Deploy Successful"})`. Arguments and results are
//! WAVE, the component model's value text format (`wasm-wave`, which
//! wasmtime's `Val` speaks).
//!
//! Each call runs in a fresh instance of the component that holds no
//! process, as an HTTP request handler does, under the node's call
//! deadline: what the function does to reach state, it does through
//! processes and storage, with the component's own grants.

use std::sync::Arc;

use wasm_wave::untyped::UntypedFuncCall;
use wasmtime::component::Val;

use crate::node::OperatorAccess;
use crate::wasm::{Component, ExportedFunction, guarded};

/// Whether a console line is a function call (`name(...)`).
pub fn is_call(line: &str) -> bool {
    let line = line.trim();
    line.ends_with(')')
        && line
            .split_once('(')
            .is_some_and(|(name, _)| !name.is_empty() && !name.contains(char::is_whitespace))
}

/// Runs the call written in `line` and renders its results in WAVE.
pub async fn call(node: &OperatorAccess, line: &str) -> Result<String, String> {
    let parsed =
        UntypedFuncCall::parse(line.trim()).map_err(|e| format!("cannot read the call: {e}"))?;
    let (component, function) = find(node, parsed.name())?;
    let types: Vec<_> = function.params.iter().map(|(_, ty)| ty.clone()).collect();
    let params: Vec<Val> = parsed
        .to_wasm_params(types.iter())
        .map_err(|e| format!("{}: {e}\n  expects {}", parsed.name(), function.signature()))?;
    let deadline = node.limits().call_deadline;
    let (mut store, instance) = component.one_off_instance(deadline).await?;
    let func = instance
        .get_func(&mut store, function.index)
        .ok_or_else(|| format!("{} is not a function", parsed.name()))?;
    let mut results = vec![Val::Bool(false); function.results.len()];
    guarded(deadline, func.call_async(&mut store, &params, &mut results))
        .await
        .map_err(|reason| format!("{} failed: {reason}", parsed.name()))?;
    let rendered: Result<Vec<String>, _> = results.iter().map(wasm_wave::to_string).collect();
    let rendered = rendered.map_err(|e| format!("cannot render the result: {e}"))?;
    let text = match rendered.len() {
        0 => "ok".to_string(),
        1 => rendered.concat(),
        _ => format!("({})", rendered.join(", ")),
    };
    // A function that answers `err(...)` failed: `rpc` exits non-zero.
    match results.as_slice() {
        [Val::Result(Err(_))] => Err(text),
        _ => Ok(text),
    }
}

/// The function a call names: `interface.function`, or
/// `component.interface.function` when two components export one.
fn find<'a>(
    node: &'a OperatorAccess,
    name: &str,
) -> Result<(&'a Arc<Component>, &'a ExportedFunction), String> {
    let (component_wanted, rest) = match name.split('.').collect::<Vec<_>>().as_slice() {
        [component, _, _] => (
            Some(*component),
            name.split_once('.').map_or(name, |(_, r)| r),
        ),
        _ => (None, name),
    };
    let (interface, function) = rest.rsplit_once('.').ok_or_else(|| {
        format!("`{name}`: write INTERFACE.FUNCTION(...), e.g. todo.entries(\"list\"); `functions` lists them")
    })?;
    let matches: Vec<_> = node
        .components()
        .iter()
        .filter(|component| component_wanted.is_none_or(|wanted| **component.name() == *wanted))
        .flat_map(|component| {
            component
                .code()
                .functions()
                .iter()
                .filter(|f| {
                    f.name == function
                        && (f.interface_short == interface || f.interface == interface)
                })
                .map(move |f| (component, f))
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!(
            "no component exports `{interface}.{function}`; `functions` lists what can be called"
        )),
        many => Err(format!(
            "`{interface}.{function}` is exported by {}: prefix the component's name",
            many.iter()
                .map(|(component, _)| component.name().as_ref())
                .collect::<Vec<_>>()
                .join(" and ")
        )),
    }
}

/// Every callable function, one signature per line.
pub fn functions(node: &OperatorAccess) -> String {
    let mut out = String::new();
    for component in node.components() {
        for function in component.code().functions() {
            out.push_str(&format!(
                "{}  ({})\n",
                function.signature(),
                component.name()
            ));
        }
    }
    if out.is_empty() {
        out.push_str("no component exports functions of its own\n");
    }
    out
}

/// The fuzz target `wave_call` (`fuzz/`): a console call's arguments,
/// read as WAVE against every one of `functions`' parameter types (the
/// fuzzer need not guess a name). Arguments that read must write back as
/// WAVE that reads as the same values.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_call(functions: &[ExportedFunction], line: &str) {
    let Ok(parsed) = UntypedFuncCall::parse(line.trim()) else {
        return;
    };
    for function in functions {
        let types: Vec<_> = function.params.iter().map(|(_, ty)| ty.clone()).collect();
        let Ok(params) = parsed.to_wasm_params::<Val>(types.iter()) else {
            continue;
        };
        let written: Vec<String> = params
            .iter()
            .map(|value| wasm_wave::to_string(value).expect("a value read from WAVE writes"))
            .collect();
        let line = format!("f({})", written.join(", "));
        let again = UntypedFuncCall::parse(&line).expect("written WAVE reads");
        let params_again: Vec<Val> = again
            .to_wasm_params(types.iter())
            .expect("written WAVE reads as the same types");
        assert_eq!(params, params_again, "{}", written.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_told_from_commands() {
        assert!(is_call("todo.entries(\"a\")"));
        assert!(is_call(
            " todo.add-entry(\"a\", {date: \"2023-01-01\", title: \"x y\"}) "
        ));
        assert!(!is_call("ps"));
        assert!(!is_call("info (x)"));
        assert!(!is_call("(x)"));
    }
}
