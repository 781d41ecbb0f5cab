//! Validation against QMK's JSON schemas (`data/schemas/*.jsonschema`), with `$ref`s between
//! the schema files resolved from the files themselves (never fetched).

use crate::json;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// Base under which every schema file is registered, so `./definitions.jsonschema#/x` resolves.
const BASE: &str = "https://schemas.qmk.invalid/";

/// Compiled validators by schema `$id` (e.g. `qmk.keyboard.v1`).
pub struct Schemas {
    validators: HashMap<String, jsonschema::Validator>,
}

/// Schemas that could not be loaded or compiled.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("reading schemas: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Load(#[from] json::LoadError),
    #[error("schema {name}: {message}")]
    Compile { name: String, message: String },
}

impl Schemas {
    /// Loads and compiles every `*.jsonschema` in `dir`.
    pub fn load(dir: &Path) -> Result<Schemas, SchemaError> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "jsonschema") {
                files.push(path);
            }
        }
        files.sort();
        let mut docs = Vec::new();
        for path in files {
            let mut doc = json::load(&path)?;
            let file_name = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Value::Object(map) = &mut doc else {
                continue;
            };
            let id = map
                .get("$id")
                .and_then(Value::as_str)
                .unwrap_or(&file_name)
                .to_owned();
            // Registered by file name: relative refs between files then resolve naturally.
            map.insert("$id".into(), Value::String(format!("{BASE}{file_name}")));
            docs.push((id, file_name, doc));
        }

        let mut registry = jsonschema::Registry::new();
        for (_, file_name, doc) in &docs {
            registry = registry
                .add(format!("{BASE}{file_name}"), doc.clone())
                .map_err(|e| SchemaError::Compile {
                    name: file_name.clone(),
                    message: e.to_string(),
                })?;
        }
        let registry = registry.prepare().map_err(|e| SchemaError::Compile {
            name: "registry".into(),
            message: e.to_string(),
        })?;

        let mut validators = HashMap::new();
        for (id, file_name, doc) in &docs {
            let v = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(false)
                .with_registry(&registry)
                .build(doc)
                .map_err(|e| SchemaError::Compile {
                    name: file_name.clone(),
                    message: e.to_string(),
                })?;
            validators.insert(id.clone(), v);
        }
        Ok(Schemas { validators })
    }

    /// Validates `value` against the schema with `$id` `id`; the error names the path and reason.
    pub fn validate(&self, id: &str, value: &Value) -> Result<(), String> {
        let Some(v) = self.validators.get(id) else {
            return Err(format!("no schema {id}"));
        };
        match v.validate(value) {
            Ok(()) => Ok(()),
            Err(e) => {
                let path = e.instance_path().to_string();
                let dotted = path.trim_start_matches('/').replace('/', ".");
                Err(format!("{dotted}: {e}"))
            }
        }
    }
}
