//! What a component exports beyond the platform's behaviour: the optional
//! `introspect` interface, and the functions of its own interfaces that the
//! console can call with WAVE values.

use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, ComponentExportIndex, Type};

/// The optional export that renders a process's state and messages.
const INTROSPECT: &str = "otp:platform/introspect@0.2.0";

/// The optional export for hot swap.
const UPGRADE: &str = "otp:platform/upgrade@0.2.0";

/// Where `otp:platform/upgrade`'s functions are, when exported.
#[derive(Clone)]
pub struct UpgradeExports {
    pub take_over_from: ComponentExportIndex,
    pub hand_over_to: ComponentExportIndex,
}

/// Where `otp:platform/introspect`'s functions are, when exported.
#[derive(Clone)]
pub struct IntrospectExports {
    pub render_state: ComponentExportIndex,
    pub render_message: ComponentExportIndex,
}

/// A function of one of the component's own exported interfaces (not the
/// platform's, not WASI's): what the console can call with WAVE values.
#[derive(Clone)]
pub struct ExportedFunction {
    /// The interface's full name, `todo:app/todo@0.1.0`.
    pub interface: String,
    /// Its short name, `todo`: the console writes `todo.add-entry(...)`.
    pub interface_short: String,
    pub name: String,
    pub params: Vec<(String, Type)>,
    pub results: Vec<Type>,
    pub index: ComponentExportIndex,
}

impl ExportedFunction {
    /// `todo.add-entry(list: string, entry: new-entry) -> result<entry, string>`.
    pub fn signature(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(name, ty)| format!("{name}: {}", describe_type(ty)))
            .collect();
        let results: Vec<String> = self.results.iter().map(describe_type).collect();
        let arrow = match results.as_slice() {
            [] => String::new(),
            [one] => format!(" -> {one}"),
            many => format!(" -> ({})", many.join(", ")),
        };
        format!(
            "{}.{}({}){arrow}",
            self.interface_short,
            self.name,
            params.join(", ")
        )
    }
}

/// A WIT type as the console shows it in a signature.
fn describe_type(ty: &Type) -> String {
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(list) => format!("list<{}>", describe_type(&list.ty())),
        Type::Option(option) => format!("option<{}>", describe_type(&option.ty())),
        Type::Result(result) => {
            let ok = result.ok().map_or("_".to_string(), |t| describe_type(&t));
            let err = result.err().map_or("_".to_string(), |t| describe_type(&t));
            format!("result<{ok}, {err}>")
        }
        Type::Record(record) => {
            let fields: Vec<String> = record
                .fields()
                .map(|field| format!("{}: {}", field.name, describe_type(&field.ty)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        Type::Tuple(tuple) => {
            let types: Vec<String> = tuple.types().map(|t| describe_type(&t)).collect();
            format!("tuple<{}>", types.join(", "))
        }
        Type::Enum(e) => {
            let names: Vec<&str> = e.names().collect();
            format!("enum {{{}}}", names.join(", "))
        }
        Type::Flags(f) => {
            let names: Vec<&str> = f.names().collect();
            format!("flags {{{}}}", names.join(", "))
        }
        Type::Variant(_) => "variant".into(),
        _ => "resource".into(),
    }
}

pub(super) fn find_introspect(component: &Component) -> Option<IntrospectExports> {
    let interface = component.get_export_index(None, INTROSPECT)?;
    Some(IntrospectExports {
        render_state: component.get_export_index(Some(&interface), "render-state")?,
        render_message: component.get_export_index(Some(&interface), "render-message")?,
    })
}

pub(super) fn find_upgrade(component: &Component) -> Option<UpgradeExports> {
    let interface = component.get_export_index(None, UPGRADE)?;
    Some(UpgradeExports {
        take_over_from: component.get_export_index(Some(&interface), "take-over-from")?,
        hand_over_to: component.get_export_index(Some(&interface), "hand-over-to")?,
    })
}

/// The functions of every exported interface that is the component's own.
pub(super) fn find_functions(
    engine: &wasmtime::Engine,
    component: &Component,
) -> Vec<ExportedFunction> {
    let ty = component.component_type();
    let mut functions = Vec::new();
    for (interface, item) in ty.exports(engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        if interface.starts_with("otp:platform/") || interface.starts_with("wasi:") {
            continue;
        }
        let Some(interface_index) = component.get_export_index(None, interface) else {
            continue;
        };
        let short = interface
            .rsplit('/')
            .next()
            .unwrap_or(interface)
            .split('@')
            .next()
            .unwrap_or(interface)
            .to_string();
        for (name, export) in instance.exports(engine) {
            let ComponentItem::ComponentFunc(func) = export.ty else {
                continue;
            };
            let Some(index) = component.get_export_index(Some(&interface_index), name) else {
                continue;
            };
            functions.push(exported_function(interface, &short, name, &func, index));
        }
    }
    functions
}

fn exported_function(
    interface: &str,
    short: &str,
    name: &str,
    func: &ComponentFunc,
    index: ComponentExportIndex,
) -> ExportedFunction {
    ExportedFunction {
        interface: interface.to_string(),
        interface_short: short.to_string(),
        name: name.to_string(),
        params: func
            .params()
            .map(|(name, ty)| (name.to_string(), ty))
            .collect(),
        results: func.results().collect(),
        index,
    }
}
