//! The info.json of one keyboard, resolved the way QMK's `info_json()` does: keyboard.json /
//! info.json files merged from the keyboard's folder up, defaults, processor rules, legacy
//! config.h/rules.mk values, computed values, schema validation and QMK's extra checks
//! (which land in `parse_errors`/`parse_warnings`, exactly as QMK writes them).

use crate::legacy::{self, ConfigH, Raw, RulesMk};
use crate::pyfmt::{self, truthy};
use crate::schema::Schemas;
use crate::tree::{DataFile, Tree};
use serde_json::{Map, Value};

type Obj = Map<String, Value>;

const CHIBIOS_PROCESSORS: &[&str] = &[
    "cortex-m0",
    "cortex-m0plus",
    "cortex-m3",
    "cortex-m4",
    "MKL26Z64",
    "MK20DX128",
    "MK20DX256",
    "MK64FX512",
    "MK66FX1M0",
    "RP2040",
    "STM32F042",
    "STM32F072",
    "STM32F103",
    "STM32F303",
    "STM32F401",
    "STM32F405",
    "STM32F407",
    "STM32F411",
    "STM32F446",
    "STM32G0B1",
    "STM32G431",
    "STM32G474",
    "STM32H723",
    "STM32H733",
    "STM32L412",
    "STM32L422",
    "STM32L432",
    "STM32L433",
    "STM32L442",
    "STM32L443",
    "GD32VF103",
    "WB32F3G71",
    "WB32FQ95",
    "AT32F415",
];
const LUFA_PROCESSORS: &[&str] = &[
    "at90usb162",
    "atmega16u2",
    "atmega32u2",
    "atmega16u4",
    "atmega32u4",
    "at90usb646",
    "at90usb647",
    "at90usb1286",
    "at90usb1287",
];
const VUSB_PROCESSORS: &[&str] = &["atmega32a", "atmega328p", "atmega328", "attiny85"];
const JOYSTICK_AXES: &[&str] = &["x", "y", "z", "rx", "ry", "rz"];
const COL_LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijilmnopqrstuvwxyz";
const ROW_LETTERS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop";
const TRUE_VALUES: [&str; 4] = ["true", "1", "on", "yes"];
const FALSE_VALUES: [&str; 4] = ["false", "0", "off", "no"];

/// The mapping files every keyboard needs, loaded once.
pub struct Mappings {
    pub defaults: Obj,
    pub info_config: Obj,
    pub info_rules: Obj,
    pub schemas: Schemas,
}

/// Why a keyboard was left out.
#[derive(Debug, thiserror::Error)]
pub enum KeyboardError {
    #[error("{file}: {message}")]
    Load { file: String, message: String },
    #[error("invalid API data: {0}")]
    Schema(String),
}

fn error(info: &mut Obj, msg: String) {
    if let Some(Value::Array(a)) = info.get_mut("parse_errors") {
        a.push(Value::String(msg));
    }
}

fn warning(info: &mut Obj, msg: String) {
    if let Some(Value::Array(a)) = info.get_mut("parse_warnings") {
        a.push(Value::String(msg));
    }
}

/// `d.setdefault(key, {})` as an object (a non-object value is replaced).
fn obj_entry<'m>(m: &'m mut Obj, key: &str) -> &'m mut Obj {
    let slot = m
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Obj::new()));
    if !slot.is_object() {
        *slot = Value::Object(Obj::new());
    }
    match slot {
        Value::Object(o) => o,
        _ => unreachable!("just made an object"),
    }
}

fn get<'v>(m: &'v Obj, path: &[&str]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    let mut cur = m.get(*first)?;
    for p in rest {
        cur = cur.as_object()?.get(*p)?;
    }
    Some(cur)
}

fn get_obj<'v>(m: &'v Obj, path: &[&str]) -> Option<&'v Obj> {
    get(m, path).and_then(Value::as_object)
}

fn get_i64(m: &Obj, path: &[&str]) -> Option<i64> {
    get(m, path).and_then(Value::as_i64)
}

/// QMK's `deep_update`: objects merge recursively, everything else is replaced in place.
pub fn deep_update(orig: &mut Obj, new: Obj) {
    for (k, v) in new {
        match v {
            Value::Object(nv) => {
                let slot = obj_entry(orig, &k);
                deep_update(slot, nv);
            }
            other => {
                orig.insert(k, other);
            }
        }
    }
}

/// The info.json/keyboard.json files of `kb`, most specific first (at most 5 parent levels).
fn config_files<'t>(tree: &'t Tree, kb: &str) -> Vec<(String, &'t DataFile)> {
    let mut out = Vec::new();
    let mut dirs = vec![kb.to_owned()];
    let mut cur = kb;
    for _ in 0..5 {
        match cur.rfind('/') {
            Some(i) => {
                cur = &cur[..i];
                dirs.push(cur.to_owned());
            }
            None => break,
        }
    }
    for d in dirs {
        if let Some(f) = tree.folder(&d) {
            if let Some(p) = &f.info_json {
                out.push((format!("keyboards/{d}/info.json"), p));
            }
            if let Some(p) = &f.keyboard_json {
                out.push((format!("keyboards/{d}/keyboard.json"), p));
            }
        }
    }
    out
}

fn merge_info_jsons(
    tree: &Tree,
    maps: &Mappings,
    kb: &str,
    info: &mut Obj,
    log: &mut Vec<String>,
) -> Result<(), KeyboardError> {
    for (file, data) in config_files(tree, kb) {
        let value = data.get().map_err(|message| KeyboardError::Load {
            file: file.clone(),
            message,
        })?;
        let Value::Object(new_obj) = value.as_ref() else {
            error(
                info,
                format!("Invalid file {file}, root object should be a dictionary."),
            );
            continue;
        };
        if let Err(e) = maps.schemas.validate("qmk.keyboard.v1", &value) {
            log.push(format!("Not including data from file: {file}: {e}"));
            continue;
        }
        let mut new = new_obj.clone();

        if let Some(aliases) = new.shift_remove("layout_aliases") {
            let mut merged = info
                .get("layout_aliases")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            if let Value::Object(a) = aliases {
                for (k, v) in a {
                    merged.insert(k, v);
                }
            }
            info.insert("layout_aliases".into(), Value::Object(merged));
        }

        if let Some(Value::Object(layouts)) = new.shift_remove("layouts") {
            for (name, layout) in layouts {
                let mut name = name;
                let alias = get_obj(info, &["layout_aliases"])
                    .and_then(|a| a.get(&name))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if let Some(target) = alias {
                    warning(
                        info,
                        format!("info.json uses alias name {name} instead of {target}"),
                    );
                    name = target;
                }
                let new_keys: Vec<Value> = layout
                    .get("layout")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let existing_len = get(info, &["layouts", &name, "layout"])
                    .and_then(Value::as_array)
                    .map(Vec::len);
                match existing_len {
                    Some(n) if n != new_keys.len() => {
                        error(info, format!("Number of keys for {name} does not match! info.json specifies {} keys, C macro specifies {n}", new_keys.len()));
                    }
                    Some(_) => {
                        let target = obj_entry(obj_entry(info, "layouts"), &name);
                        target.insert("json_layout".into(), Value::Bool(true));
                        if let Some(Value::Array(keys)) = target.get_mut("layout") {
                            for (existing, new_key) in keys.iter_mut().zip(new_keys) {
                                if let (Value::Object(e), Value::Object(n)) = (existing, new_key) {
                                    for (k, v) in n {
                                        e.insert(k, v);
                                    }
                                }
                            }
                        }
                    }
                    None => {
                        let all_matrix = new_keys
                            .iter()
                            .all(|k| k.as_object().is_some_and(|o| o.contains_key("matrix")));
                        if !all_matrix {
                            error(info, format!("Layout \"{name}\" has no \"matrix\" definition in either \"info.json\" or \"<keyboard>.h\"!"));
                        } else if let Value::Object(mut l) = layout {
                            l.insert("c_macro".into(), Value::Bool(false));
                            l.insert("json_layout".into(), Value::Bool(true));
                            obj_entry(info, "layouts").insert(name, Value::Object(l));
                        }
                    }
                }
            }
        }
        deep_update(info, new);
    }
    Ok(())
}

fn process_defaults(maps: &Mappings, info: &mut Obj) {
    for (default_type, thing_map) in &maps.defaults {
        let Some(Value::String(selected)) = info.get(default_type) else {
            continue;
        };
        let items = thing_map
            .get(selected.as_str())
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut merged = 0;
        for (k, v) in &items {
            if !info.contains_key(k) {
                info.insert(k.clone(), v.clone());
                merged += 1;
            }
        }
        if merged == 0 && !items.is_empty() {
            warning(info, format!("All defaults for '{default_type}' were skipped, potential redundant config or misconfiguration detected"));
        }
    }
}

/// Applies one `info_*.hjson` mapping (config.h or rules.mk direction "to json").
fn apply_mapping<'a>(
    info: &mut Obj,
    mapping: &Obj,
    lookup: impl Fn(&str) -> Option<Raw<'a>>,
    source: &str,
) {
    for (key, spec) in mapping {
        let Some(spec) = spec.as_object() else {
            continue;
        };
        let Some(info_key) = spec.get("info_key").and_then(Value::as_str) else {
            continue;
        };
        let Some(raw) = lookup(key) else {
            continue;
        };
        let flag = |name: &str, default: bool| spec.get(name).map_or(default, truthy);
        let replace_with = spec.get("replace_with").filter(|v| truthy(v));
        let replace_text =
            replace_with.map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
        if flag("invalid", false) {
            match &replace_text {
                Some(r) => error(info, format!("{key} in {source} is no longer a valid option and should be replaced with {r}")),
                None => error(info, format!("{key} in {source} is no longer a valid option and should be removed")),
            }
        } else if flag("deprecated", false) {
            match &replace_text {
                Some(r) => warning(info, format!("{key} in {source} is deprecated in favor of {r} and will be removed at a later date")),
                None => warning(info, format!("{key} in {source} is deprecated and will be removed at a later date")),
            }
        }
        if flag("to_json", true) {
            if legacy::dotted_get(info, info_key).is_some_and(truthy)
                && flag("warn_duplicate", true)
            {
                warning(
                    info,
                    format!("{key} in {source} is overwriting {info_key} in info.json"),
                );
            }
            let value_type = spec
                .get("value_type")
                .and_then(Value::as_str)
                .unwrap_or("raw");
            match legacy::to_json(value_type, raw) {
                Ok(v) => legacy::dotted_set(info, info_key, v),
                Err(e) => warning(info, format!("{key}->{info_key}: {e}")),
            }
        }
    }
}

fn extract_rules_mk(maps: &Mappings, info: &mut Obj, rules: &RulesMk) {
    let processor = match rules.get("MCU") {
        Some(m) => Value::String(m.clone()),
        None => info
            .get("processor")
            .cloned()
            .unwrap_or_else(|| Value::String("atmega32u4".into())),
    };
    info.insert("processor".into(), processor.clone());
    let p = processor.as_str();
    let set = |info: &mut Obj, k: &str, v: &str| {
        info.insert(k.into(), Value::String(v.into()));
    };
    if p.is_some_and(|p| CHIBIOS_PROCESSORS.contains(&p)) {
        set(info, "processor_type", "arm");
        set(info, "protocol", "ChibiOS");
        set(info, "platform_key", "chibios");
        if p.is_some_and(|p| p.contains("STM32")) {
            set(info, "platform", "STM32");
        } else if let Some(series) = rules.get("MCU_SERIES") {
            set(info, "platform", series);
        }
    } else if p.is_none_or(|p| LUFA_PROCESSORS.contains(&p) || VUSB_PROCESSORS.contains(&p))
        && (p.is_some() || processor.is_null())
    {
        set(info, "processor_type", "avr");
        set(
            info,
            "platform",
            rules.get("ARCH").map_or("unknown", String::as_str),
        );
        set(info, "platform_key", "avr");
        let vusb = p.is_some_and(|p| VUSB_PROCESSORS.contains(&p));
        set(info, "protocol", if vusb { "V-USB" } else { "LUFA" });
    } else {
        for k in [
            "bootloader",
            "platform",
            "processor",
            "processor_type",
            "protocol",
        ] {
            set(info, k, "unknown");
        }
    }

    apply_mapping(
        info,
        &maps.info_rules,
        |k| rules.get(k).map(|v| Raw::Text(v.as_str())),
        "rules.mk",
    );

    // Features: every *_ENABLE rule.
    for (key, value) in rules {
        let Some(stem) = key.strip_suffix("_ENABLE") else {
            continue;
        };
        let name = stem.to_lowercase();
        if name == "lto" {
            continue;
        }
        let lower = value.to_lowercase();
        let v = if TRUE_VALUES.contains(&lower.as_str()) {
            Value::Bool(true)
        } else if FALSE_VALUES.contains(&lower.as_str()) {
            Value::Bool(false)
        } else {
            Value::String(value.clone())
        };
        if let Some(features) = get_obj(info, &["features"]) {
            if features.contains_key(&name) {
                let msg = format!("Feature {name} is specified in both info.json ({}) and rules.mk ({}). The rules.mk value wins.", pyfmt::repr(&Value::Object(features.clone())), pyfmt::repr(&v));
                warning(info, msg);
            }
        }
        obj_entry(info, "features").insert(name, v);
    }

    if let Some(cm) = rules.get("CUSTOM_MATRIX").filter(|v| v.as_str() != "no") {
        if get(info, &["matrix_pins", "custom"]).is_some() {
            warning(
                info,
                "Custom Matrix is specified in both info.json and rules.mk, the rules.mk values win."
                    .into(),
            );
        }
        let key = if cm == "lite" {
            "custom_lite"
        } else {
            "custom"
        };
        obj_entry(info, "matrix_pins").insert(key.into(), Value::Bool(true));
    }
}

fn pin_name(pin: &str) -> Value {
    let pin = pin.trim();
    if pin.is_empty() || pin == "NO_PIN" {
        Value::Null
    } else if pin.chars().all(|c| c.is_ascii_digit()) {
        pin.parse::<i64>()
            .map_or_else(|_| Value::String(pin.into()), Value::from)
    } else {
        Value::String(pin.into())
    }
}

fn extract_pins(pins: &str) -> Value {
    Value::Array(pins.split(',').map(pin_name).collect())
}

fn extract_2d(raw: &str) -> Vec<Vec<String>> {
    let raw = match raw.rfind('}') {
        Some(i) => &raw[..=i],
        None => return Vec::new(),
    };
    raw.split("},{")
        .map(|row| {
            let row = row.strip_prefix('{').unwrap_or(row);
            let row = row.strip_suffix('}').unwrap_or(row);
            row.split(',').map(str::to_owned).collect()
        })
        .collect()
}

fn direct_matrix(raw: &str) -> Value {
    Value::Array(
        extract_2d(raw)
            .into_iter()
            .map(|row| {
                Value::Array(
                    row.into_iter()
                        .map(|p| {
                            if p == "NO_PIN" {
                                Value::Null
                            } else {
                                Value::String(p)
                            }
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}

fn text<'c>(c: &'c ConfigH, k: &str) -> &'c str {
    match c.get(k) {
        Some(legacy::Define::Text(t)) => t,
        _ => "",
    }
}

fn is_true(c: &ConfigH, k: &str) -> bool {
    matches!(c.get(k), Some(legacy::Define::Flag(true)))
}

/// `value.replace(' ', '')[1:-1]`
fn inner(s: &str) -> String {
    let s: String = s.chars().filter(|c| *c != ' ').collect();
    let n = s.chars().count();
    if n < 2 {
        return String::new();
    }
    s.chars().skip(1).take(n - 2).collect()
}

fn braces_stripped(s: &str) -> String {
    s.replace(['{', '}'], "").trim().to_owned()
}

fn encoders(c: &ConfigH, postfix: &str) -> Option<Value> {
    let a = inner(text(c, &format!("ENCODER_A_PINS{postfix}")));
    let b = inner(text(c, &format!("ENCODER_B_PINS{postfix}")));
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let res_text = inner(text(c, &format!("ENCODER_RESOLUTIONS{postfix}")));
    let a: Vec<&str> = a.split(',').filter(|s| !s.is_empty()).collect();
    let b: Vec<&str> = b.split(',').filter(|s| !s.is_empty()).collect();
    let mut res: Vec<String> = res_text
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(default) = c.get("ENCODER_RESOLUTION") {
        let d = match default {
            legacy::Define::Text(t) => t.clone(),
            legacy::Define::Flag(b) => if *b { "True" } else { "False" }.into(),
        };
        while res.len() < a.len() {
            res.push(d.clone());
        }
    }
    let mut out = Vec::new();
    for (i, pin_a) in a.iter().enumerate() {
        let mut e = Obj::new();
        e.insert("pin_a".into(), Value::String((*pin_a).into()));
        e.insert(
            "pin_b".into(),
            Value::String(b.get(i).copied().unwrap_or_default().into()),
        );
        if let Some(r) = res.get(i) {
            if let Ok(n) = legacy::py_int(r) {
                e.insert("resolution".into(), Value::from(n));
            }
        }
        out.push(Value::Object(e));
    }
    Some(Value::Array(out))
}

/// Moves `split.<from>` to `split.<group>.<to>` (QMK's data migrations).
fn migrate(obj: &mut Obj, from: &str, group: &str, to: &str) {
    if let Some(v) = obj.shift_remove(from) {
        obj_entry(obj, group).insert(to.into(), v);
    }
}

fn extract_config_h(maps: &Mappings, info: &mut Obj, c: &ConfigH) {
    apply_mapping(
        info,
        &maps.info_config,
        |k| c.get(k).map(Raw::from),
        "config.h",
    );

    // Matrix
    let row_pins = braces_stripped(text(c, "MATRIX_ROW_PINS"));
    let col_pins = braces_stripped(text(c, "MATRIX_COL_PINS"));
    let direct = inner(text(c, "DIRECT_PINS"));
    if c.contains_key("MATRIX_ROWS") && c.contains_key("MATRIX_COLS") {
        if info.contains_key("matrix_size") {
            warning(
                info,
                "Matrix size is specified in both info.json and config.h, the config.h values win."
                    .into(),
            );
        }
        let num = |k: &str| legacy::compute(text(c, k)).unwrap_or(Value::Null);
        let mut size = Obj::new();
        size.insert("cols".into(), num("MATRIX_COLS"));
        size.insert("rows".into(), num("MATRIX_ROWS"));
        info.insert("matrix_size".into(), Value::Object(size));
    }
    if !row_pins.is_empty() && !col_pins.is_empty() {
        if get(info, &["matrix_pins", "cols"]).is_some()
            && get(info, &["matrix_pins", "rows"]).is_some()
        {
            warning(info, "Matrix pins are specified in both info.json and config.h, the config.h values win.".into());
        }
        let mp = obj_entry(info, "matrix_pins");
        mp.insert("cols".into(), extract_pins(&col_pins));
        mp.insert("rows".into(), extract_pins(&row_pins));
    }
    if !direct.is_empty() {
        if get(info, &["matrix_pins", "direct"]).is_some() {
            warning(info, "Direct pins are specified in both info.json and config.h, the config.h values win.".into());
        }
        obj_entry(info, "matrix_pins").insert("direct".into(), direct_matrix(&direct));
    }

    // Secure unlock
    let unlock = inner(text(c, "SECURE_UNLOCK_SEQUENCE"));
    if !unlock.is_empty() {
        let seq: Vec<Value> = extract_2d(&unlock)
            .into_iter()
            .map(|row| {
                Value::Array(
                    row.iter()
                        .map(|v| legacy::py_int(v).map_or(Value::Null, Value::from))
                        .collect(),
                )
            })
            .collect();
        if let Some(existing) = get(info, &["secure", "unlock_sequence"]).cloned() {
            warning(info, format!("Secure unlock sequence is specified in both config.h (SECURE_UNLOCK_SEQUENCE) and info.json (secure.unlock_sequence) (Value: {}), the config.h value wins.", pyfmt::repr(&existing)));
        }
        obj_entry(info, "secure").insert("unlock_sequence".into(), Value::Array(seq));
    }

    // Split: migrations of old keys, then transport
    if let Some(Value::Object(split)) = info.get_mut("split") {
        migrate(split, "matrix_grid", "handedness", "matrix_grid");
        migrate(split, "soft_serial_pin", "serial", "pin");
        migrate(split, "soft_serial_speed", "serial", "speed");
    }
    if is_true(c, "USE_I2C") {
        if let Some(t) = get(info, &["split", "transport"]).cloned() {
            if t.as_object().is_some_and(|o| o.contains_key("protocol")) {
                warning(info, format!("Split transport is specified in both config.h (USE_I2C) and info.json (split.transport.protocol) (Value: {}), the config.h value wins.", pyfmt::repr(&t)));
            }
        }
        obj_entry(obj_entry(info, "split"), "transport")
            .insert("protocol".into(), Value::String("i2c".into()));
    } else if get(info, &["split", "enabled"]).is_some() {
        let t = obj_entry(obj_entry(info, "split"), "transport");
        if !t.contains_key("protocol") {
            t.insert("protocol".into(), Value::String("serial".into()));
        }
    }
    if let Some(Value::Object(split)) = info.get_mut("split") {
        if let Some(Value::Object(t)) = split.get_mut("transport") {
            migrate(t, "sync_matrix_state", "sync", "matrix_state");
            migrate(t, "sync_modifiers", "sync", "modifiers");
        }
    }

    // Split right-hand pins
    let r_rows = braces_stripped(text(c, "MATRIX_ROW_PINS_RIGHT"));
    let r_cols = braces_stripped(text(c, "MATRIX_COL_PINS_RIGHT"));
    let r_direct = inner(text(c, "DIRECT_PINS_RIGHT"));
    if !r_rows.is_empty() || !r_cols.is_empty() || !r_direct.is_empty() {
        if get(info, &["split", "matrix_pins", "right"]).is_some_and(truthy) {
            warning(info, "Right hand matrix data is specified in both info.json and config.h, the config.h values win.".into());
        }
        let right = obj_entry(obj_entry(obj_entry(info, "split"), "matrix_pins"), "right");
        if !r_cols.is_empty() {
            right.insert("cols".into(), extract_pins(&r_cols));
        }
        if !r_rows.is_empty() {
            right.insert("rows".into(), extract_pins(&r_rows));
        }
        if !r_direct.is_empty() {
            right.insert("direct".into(), direct_matrix(&r_direct));
        }
    }

    // Encoders
    if let Some(enc) = encoders(c, "") {
        if let Some(existing) = get(info, &["encoder", "rotary"]).cloned() {
            warning(info, format!("Encoder config is specified in both config.h ({}) and info.json ({}). The config.h value wins.", pyfmt::repr(&enc), pyfmt::repr(&existing)));
        }
        obj_entry(info, "encoder").insert("rotary".into(), enc);
    }
    if get(info, &["features", "encoder"]).is_some_and(truthy) {
        obj_entry(info, "encoder").insert("enabled".into(), Value::Bool(true));
    }
    if let Some(enc) = encoders(c, "_RIGHT") {
        if let Some(existing) = get(info, &["split", "encoder", "right", "rotary"]).cloned() {
            warning(info, format!("Encoder config is specified in both config.h and info.json (encoder.rotary) (Value: {}), the config.h value wins.", pyfmt::repr(&existing)));
        }
        obj_entry(obj_entry(obj_entry(info, "split"), "encoder"), "right")
            .insert("rotary".into(), enc);
    }
}

fn array_len(v: Option<&Value>) -> Option<usize> {
    v.and_then(Value::as_array).map(Vec::len)
}

fn matrix_size(info: &mut Obj) {
    if info.contains_key("matrix_size") || !info.contains_key("matrix_pins") {
        return;
    }
    let mut size = Obj::new();
    if let Some(direct) = get(info, &["matrix_pins", "direct"]).and_then(Value::as_array) {
        size.insert(
            "cols".into(),
            Value::from(array_len(direct.first()).unwrap_or(0)),
        );
        size.insert("rows".into(), Value::from(direct.len()));
    } else if let (Some(c), Some(r)) = (
        array_len(get(info, &["matrix_pins", "cols"])),
        array_len(get(info, &["matrix_pins", "rows"])),
    ) {
        size.insert("cols".into(), Value::from(c));
        size.insert("rows".into(), Value::from(r));
    }
    if get(info, &["split", "enabled"]).is_some_and(truthy) {
        if let Some(r) = size.get("rows").and_then(Value::as_i64) {
            size.insert("rows".into(), Value::from(r * 2));
        }
    }
    info.insert("matrix_size".into(), Value::Object(size));
}

fn joystick_axis_count(info: &mut Obj) {
    let Some(axes) = get_obj(info, &["joystick", "axes"]) else {
        return;
    };
    let count = axes
        .keys()
        .filter_map(|a| JOYSTICK_AXES.iter().position(|x| x == a))
        .max()
        .map_or(0, |m| m + 1);
    obj_entry(info, "joystick").insert("axis_count".into(), Value::from(count));
}

fn matrix_masked(info: &mut Obj) {
    let required = get(info, &["dip_switch", "matrix_grid"]).is_some()
        || get(info, &["split", "handedness", "matrix_grid"]).is_some();
    if required && get(info, &["matrix_pins", "masked"]).is_none() {
        obj_entry(info, "matrix_pins").insert("masked".into(), Value::Bool(true));
    }
}

fn led_config(tree: &Tree, kb: &str, info: &mut Obj) {
    for feature in ["rgb_matrix", "led_matrix"] {
        let enabled = get(info, &["features", feature]).is_some_and(truthy);
        if !(enabled || info.contains_key(feature)) {
            continue;
        }
        if get(info, &[feature, "layout"]).is_none() {
            let has_size = get_i64(info, &["matrix_size", "cols"]).is_some_and(|v| v != 0)
                && get_i64(info, &["matrix_size", "rows"]).is_some_and(|v| v != 0);
            if !has_size {
                warning(
                    info,
                    "led_config: matrix size required to parse g_led_config".into(),
                );
            } else {
                let cols = get_i64(info, &["matrix_size", "cols"]).unwrap_or(0);
                let rows = get_i64(info, &["matrix_size", "rows"]).unwrap_or(0);
                let c_files = crate::tree::ancestors(kb)
                    .into_iter()
                    .skip(1)
                    .filter_map(|d| tree.folder(&d).and_then(|f| f.keyboard_c.clone()));
                for file in c_files {
                    let name = file
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let Ok(src) = std::fs::read_to_string(&file) else {
                        continue;
                    };
                    match crate::c_led::find_led_config(&src, cols, rows) {
                        Ok(Some(leds)) => {
                            obj_entry(info, feature).insert("layout".into(), Value::Array(leds));
                        }
                        Ok(None) => {}
                        Err(e) => warning(info, format!("led_config: {name}: {e}")),
                    }
                }
            }
        }
        let Some(Value::Object(f)) = info.get_mut(feature) else {
            continue;
        };
        let layout: Vec<Value> = match f.get("layout") {
            Some(Value::Array(l)) if !l.is_empty() => l.clone(),
            _ => continue,
        };
        if !f.get("led_count").is_some_and(truthy) {
            f.insert("led_count".into(), Value::from(layout.len()));
        }
        if !f.get("flag_steps").is_some_and(truthy) {
            let mut flags: Vec<i64> = vec![0xFF, 0x00];
            let mut kb_flags: Vec<i64> = layout
                .iter()
                .map(|x| x.get("flags").and_then(Value::as_i64).unwrap_or(0))
                .collect();
            kb_flags.sort_unstable();
            kb_flags.dedup();
            if kb_flags.len() > 1 {
                let unique: Vec<i64> = [0x01 | 0x04, 0x02]
                    .into_iter()
                    .filter(|c| kb_flags.iter().any(|f| c & f != 0))
                    .collect();
                if unique.len() > 1 {
                    flags.extend(unique);
                }
            }
            flags.sort_unstable_by(|a, b| b.cmp(a));
            flags.dedup();
            f.insert(
                "flag_steps".into(),
                Value::Array(flags.into_iter().map(Value::from).collect()),
            );
        }
    }
}

/// A number as Python holds it, for arithmetic that ends up in messages.
#[derive(Clone, Copy)]
enum PyNum {
    Int(i64),
    Float(f64),
}

impl PyNum {
    fn of(v: Option<&Value>, default: i64) -> PyNum {
        match v {
            Some(Value::Number(n)) => n
                .as_i64()
                .map_or_else(|| PyNum::Float(n.as_f64().unwrap_or(0.0)), PyNum::Int),
            _ => PyNum::Int(default),
        }
    }
    fn f(self) -> f64 {
        match self {
            PyNum::Int(i) => i as f64,
            PyNum::Float(f) => f,
        }
    }
    fn text(self) -> String {
        match self {
            PyNum::Int(i) => i.to_string(),
            PyNum::Float(f) => crate::json::python_float_repr(f),
        }
    }
}

fn keyboard_in_layout_name(kb: &str, layout: &str) -> bool {
    const SAFE: [&str; 9] = [
        "ansi", "iso", "jp", "jis", "ortho", "wkl", "tkl", "preonic", "planck",
    ];
    let stripped = strip_size_tokens(layout);
    kb.split('/')
        .filter(|f| !SAFE.contains(f))
        .any(|f| stripped.contains(f))
}

/// Removes `_split_<n>x<n>_<n>` and then `_<n>x<n>` tokens.
fn strip_size_tokens(layout: &str) -> String {
    fn digits(b: &[u8], mut i: usize) -> Option<usize> {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        (i > start).then_some(i)
    }
    fn nxn(b: &[u8], i: usize) -> Option<usize> {
        let i = digits(b, i)?;
        if b.get(i) != Some(&b'x') {
            return None;
        }
        digits(b, i + 1)
    }
    let split = |s: &str| -> String {
        let b = s.as_bytes();
        let mut out = String::new();
        let mut i = 0;
        while i < b.len() {
            if s[i..].starts_with("_split_") {
                if let Some(j) = nxn(b, i + 7) {
                    if b.get(j) == Some(&b'_') {
                        if let Some(k) = digits(b, j + 1) {
                            i = k;
                            continue;
                        }
                    }
                }
            }
            out.push(b[i] as char);
            i += 1;
        }
        out
    };
    let size = |s: &str| -> String {
        let b = s.as_bytes();
        let mut out = String::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'_' {
                if let Some(j) = nxn(b, i + 1) {
                    i = j;
                    continue;
                }
            }
            out.push(b[i] as char);
            i += 1;
        }
        out
    };
    size(&split(layout))
}

fn validate_extra(tree: &Tree, kb: &str, info: &mut Obj) {
    // Build target: keyboard.json only at the deepest level, never next to info.json.
    let files: Vec<String> = config_files(tree, kb).into_iter().map(|(f, _)| f).collect();
    let own = format!("keyboards/{kb}/keyboard.json");
    let mut kb_json_count = 0;
    for f in &files {
        if f.ends_with("/keyboard.json") {
            kb_json_count += 1;
            if *f != own {
                error(
                    info,
                    format!("Invalid keyboard.json location detected: {f}."),
                );
            }
        }
    }
    for f in &files {
        if let Some(dir) = f.strip_suffix("/keyboard.json") {
            let info_file = format!("{dir}/info.json");
            if files.contains(&info_file) {
                error(
                    info,
                    format!("Invalid info.json location detected: {info_file}."),
                );
            }
        }
    }
    if kb_json_count == 0 {
        warning(info, "Build marker \"keyboard.json\" not found.".into());
    }

    validate_layouts(tree, kb, info);

    // Keycodes
    let long: Vec<String> = info
        .get("keycodes")
        .and_then(Value::as_array)
        .map(|decls| {
            decls
                .iter()
                .filter_map(|d| {
                    let key = d.get("key")?.as_str()?;
                    let aliases = d.get("aliases").is_some_and(truthy);
                    (key.chars().count() > 7 && !aliases).then(|| key.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    for key in long {
        error(info, format!("Keycode {key} has no short form alias"));
    }

    validate_encoders(info);
    validate_bootmagic(info);
}

fn validate_layouts(tree: &Tree, kb: &str, info: &mut Obj) {
    let col_num = get_i64(info, &["matrix_size", "cols"]).unwrap_or(0);
    let row_num = get_i64(info, &["matrix_size", "rows"]).unwrap_or(0);
    let layouts = get_obj(info, &["layouts"]).cloned().unwrap_or_default();
    let aliases = get_obj(info, &["layout_aliases"])
        .cloned()
        .unwrap_or_default();
    let community: Vec<String> = info
        .get("community_layouts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let community_names: Vec<String> = community.iter().map(|l| format!("LAYOUT_{l}")).collect();

    if layouts.is_empty()
        || layouts
            .values()
            .all(|l| !l.get("json_layout").is_some_and(truthy))
    {
        error(
            info,
            "No LAYOUTs defined! Need at least one layout defined in info.json.".into(),
        );
    }
    for (name, l) in &layouts {
        if l.get("c_macro").is_some_and(truthy) {
            error(
                info,
                format!("{name}: Layout macro should not be defined within \".h\" files."),
            );
        }
    }
    let keys_of = |l: &Value| -> Vec<Value> {
        l.get("layout")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for (name, l) in &layouts {
        for (index, key) in keys_of(l).iter().enumerate() {
            let m = key.get("matrix").and_then(Value::as_array);
            let row = m
                .and_then(|m| m.first())
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let col = m
                .and_then(|m| m.get(1))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let key_name = match key.get("label").and_then(Value::as_str) {
                Some(l) => l.to_owned(),
                None => {
                    let r = usize::try_from(row).ok().and_then(|r| ROW_LETTERS.get(r));
                    let c = usize::try_from(col).ok().and_then(|c| COL_LETTERS.get(c));
                    format!(
                        "k{}{}",
                        r.map_or('?', |b| *b as char),
                        c.map_or('?', |b| *b as char)
                    )
                }
            };
            if row >= row_num {
                error(info, format!("{name}: Matrix row for key {index} ({key_name}) is {row} but must be less than {row_num}"));
            }
            if col >= col_num {
                error(info, format!("{name}: Matrix column for key {index} ({key_name}) is {col} but must be less than {col_num}"));
            }
        }
    }
    for (name, l) in &layouts {
        let mut seen = std::collections::HashSet::new();
        for (index, key) in keys_of(l).iter().enumerate() {
            let m = pyfmt::repr(key.get("matrix").unwrap_or(&Value::Null));
            if !seen.insert(m) {
                error(
                    info,
                    format!(
                        "{name}: Matrix location for key {index} is not unique {}",
                        pyfmt::repr(key)
                    ),
                );
            }
        }
    }
    for (name, l) in &layouts {
        let keys = keys_of(l);
        if keys.is_empty() {
            continue;
        }
        let left = |k: &Value| {
            let x = PyNum::of(k.get("x"), 0);
            let iso = PyNum::of(k.get("h"), 1).f() == 2.0 && PyNum::of(k.get("w"), 1).f() == 1.25;
            if iso {
                PyNum::Float(x.f() - 0.25)
            } else {
                x
            }
        };
        let min = |vals: Vec<PyNum>| {
            vals.into_iter()
                .reduce(|a, b| if b.f() < a.f() { b } else { a })
        };
        if let Some(off) = min(keys.iter().map(left).collect()) {
            if off.f() > 0.0 {
                warning(
                    info,
                    format!("Layout \"{name}\" is offset on X axis by {}", off.text()),
                );
            }
        }
        if let Some(off) = min(keys.iter().map(|k| PyNum::of(k.get("y"), 0)).collect()) {
            if off.f() > 0.0 {
                warning(
                    info,
                    format!("Layout \"{name}\" is offset on Y axis by {}", off.text()),
                );
            }
        }
    }
    if layouts.len() == 1 && layouts.contains_key("LAYOUT_all") {
        warning(
            info,
            "\"LAYOUT_all\" should be \"LAYOUT\" unless additional layouts are provided.".into(),
        );
    }
    for name in layouts.keys() {
        if !community_names.contains(name) && keyboard_in_layout_name(kb, name) {
            warning(
                info,
                format!("Layout \"{name}\" should not contain name of keyboard."),
            );
        }
    }
    // QMK removes from the list it iterates, which skips the element after each removal.
    let mut last = None;
    let mut i = 0;
    loop {
        let current = match info.get("community_layouts").and_then(Value::as_array) {
            Some(a) if i < a.len() => a[i].clone(),
            _ => break,
        };
        let name = current.as_str().unwrap_or_default().to_owned();
        last = Some(name.clone());
        if !tree.default_layouts.contains(&name) {
            if let Some(Value::Array(a)) = info.get_mut("community_layouts") {
                if let Some(pos) = a.iter().position(|v| *v == current) {
                    a.remove(pos);
                }
            }
            error(
                info,
                format!("Claims to support a community layout that does not exist: {name}"),
            );
        }
        i += 1;
    }
    for layout_name in &community_names {
        if !layouts.contains_key(layout_name) && !aliases.contains_key(layout_name) {
            let l = last.clone().unwrap_or_default();
            error(
                info,
                format!(
                    "Claims to support community layout {l} but no {layout_name}() macro found"
                ),
            );
        }
    }
}

fn validate_encoders(info: &mut Obj) {
    let left = array_len(get(info, &["encoder", "rotary"])).unwrap_or(0);
    let right = if get(info, &["split", "enabled"]).is_some_and(truthy) {
        match get(info, &["split", "encoder", "right", "rotary"]) {
            Some(v) => array_len(Some(v)).unwrap_or(0),
            None => left,
        }
    } else {
        0
    };
    let count = (left + right) as i64;
    let mut found_errors = Vec::new();
    if let Some(layouts) = get_obj(info, &["layouts"]) {
        for (name, l) in layouts {
            let mut found = std::collections::HashSet::new();
            for key in l
                .get("layout")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(enc) = key.get("encoder") else {
                    continue;
                };
                let idx = enc.as_i64().unwrap_or(0);
                let reason = if count == 0 {
                    Some("non-configured")
                } else if idx >= count {
                    Some("out of bounds")
                } else if found.contains(&idx) {
                    Some("duplicate")
                } else {
                    None
                };
                if let Some(r) = reason {
                    found_errors.push(format!(
                        "Layout \"{name}\" contains {r} encoder index {}.",
                        pyfmt::repr(enc)
                    ));
                }
                found.insert(idx);
            }
        }
    }
    for e in found_errors {
        error(info, e);
    }
}

fn validate_bootmagic(info: &mut Obj) {
    let rows = get_i64(info, &["matrix_size", "rows"]).unwrap_or(0);
    let cols = get_i64(info, &["matrix_size", "cols"]).unwrap_or(0);
    let pair = |v: Option<&Value>, d: (i64, i64)| {
        v.and_then(Value::as_array)
            .map(|a| {
                (
                    a.first().and_then(Value::as_i64).unwrap_or(0),
                    a.get(1).and_then(Value::as_i64).unwrap_or(0),
                )
            })
            .unwrap_or(d)
    };
    let (br, bc) = pair(get(info, &["bootmagic", "matrix"]), (0, 0));
    let (rr, rc) = pair(
        get(info, &["split", "bootmagic", "matrix"]),
        (rows.div_euclid(2), cols - 1),
    );
    let half = rows.div_euclid(2);
    let mut errs = Vec::new();
    if !get(info, &["split", "enabled"]).is_some_and(truthy) {
        if br >= rows {
            errs.push(format!(
                "Bootmagic row ({br}) must be in the range 0-{}",
                rows - 1
            ));
        }
        if bc >= cols {
            errs.push(format!(
                "Bootmagic col ({bc}) must be in the range 0-{}",
                cols - 1
            ));
        }
    } else {
        if br >= half {
            errs.push(format!(
                "Bootmagic left row ({br}) must be in the range 0-{}",
                half - 1
            ));
        }
        if bc >= cols {
            errs.push(format!(
                "Bootmagic left col ({bc}) must be in the range 0-{}",
                cols - 1
            ));
        }
        if rr < half || rr >= rows {
            errs.push(format!(
                "Bootmagic right row ({rr}) must be in the range {half}-{}",
                rows - 1
            ));
        }
        if rc >= cols {
            errs.push(format!(
                "Bootmagic right col ({rc}) must be in the range 0-{}",
                cols - 1
            ));
        }
    }
    for e in errs {
        error(info, e);
    }
}

fn check_matrix(info: &mut Obj) {
    let (Some(pins), Some(size)) = (
        get_obj(info, &["matrix_pins"]),
        get_obj(info, &["matrix_size"]),
    ) else {
        return;
    };
    let actual_cols = size.get("cols").and_then(Value::as_i64).unwrap_or(0);
    let actual_rows = size.get("rows").and_then(Value::as_i64).unwrap_or(0);
    let (cols, rows) = if let Some(d) = pins.get("direct").and_then(Value::as_array) {
        (array_len(d.first()).unwrap_or(0) as i64, d.len() as i64)
    } else if let (Some(c), Some(r)) = (array_len(pins.get("cols")), array_len(pins.get("rows"))) {
        (c as i64, r as i64)
    } else if !pins.contains_key("cols") && !pins.contains_key("rows") {
        return;
    } else {
        (0, 0)
    };
    let half_ok = |n: i64, actual: i64| n as f64 == actual as f64 / 2.0;
    if cols != actual_cols && !half_ok(cols, actual_cols) {
        error(info, format!("MATRIX_COLS is inconsistent with the size of MATRIX_COL_PINS: {cols} != {actual_cols}"));
    }
    if rows != actual_rows && !half_ok(rows, actual_rows) {
        error(info, format!("MATRIX_ROWS is inconsistent with the size of MATRIX_ROW_PINS: {rows} != {actual_rows}"));
    }
}

/// The legacy config.h values of `kb`: every folder from the top, later folders winning.
fn config_h_of(tree: &Tree, kb: &str) -> ConfigH {
    let mut out = ConfigH::new();
    for dir in crate::tree::ancestors(kb).into_iter().skip(1) {
        if let Some(c) = tree.folder(&dir).and_then(|f| f.config_h.as_ref()) {
            for (k, v) in c {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// The rules.mk values of `kb`: its own file first, then every folder from the top (QMK's order,
/// which reads the keyboard's own file twice).
fn rules_mk_of(tree: &Tree, kb: &str) -> RulesMk {
    let mut rules = RulesMk::new();
    if let Some(t) = tree.folder(kb).and_then(|f| f.rules_mk.as_ref()) {
        legacy::apply_rules_mk(t, &mut rules);
    }
    for dir in crate::tree::ancestors(kb).into_iter().skip(1) {
        if let Some(t) = tree.folder(&dir).and_then(|f| f.rules_mk.as_ref()) {
            legacy::apply_rules_mk(t, &mut rules);
        }
    }
    rules
}

/// Resolves the info.json object of `kb`. `log` receives notes that QMK only prints.
pub fn info_json(
    tree: &Tree,
    maps: &Mappings,
    kb: &str,
    log: &mut Vec<String>,
) -> Result<Obj, KeyboardError> {
    let mut info = Obj::new();
    info.insert("keyboard_name".into(), Value::String(kb.into()));
    info.insert("keyboard_folder".into(), Value::String(kb.into()));
    info.insert("keymaps".into(), Value::Object(Obj::new()));
    info.insert("layouts".into(), Value::Object(Obj::new()));
    info.insert("parse_errors".into(), Value::Array(Vec::new()));
    info.insert("parse_warnings".into(), Value::Array(Vec::new()));
    info.insert("maintainer".into(), Value::String("qmk".into()));

    merge_info_jsons(tree, maps, kb, &mut info, log)?;
    process_defaults(maps, &mut info);
    extract_rules_mk(maps, &mut info, &rules_mk_of(tree, kb));
    extract_config_h(maps, &mut info, &config_h_of(tree, kb));
    matrix_size(&mut info);
    joystick_axis_count(&mut info);
    matrix_masked(&mut info);
    led_config(tree, kb, &mut info);

    let as_value = Value::Object(info);
    maps.schemas
        .validate("qmk.api.keyboard.v1", &as_value)
        .map_err(KeyboardError::Schema)?;
    let Value::Object(mut info) = as_value else {
        return Err(KeyboardError::Schema(
            "the resolved data is not an object".into(),
        ));
    };
    validate_extra(tree, kb, &mut info);
    check_matrix(&mut info);
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_tokens_are_ignored_in_layout_names() {
        assert_eq!(strip_size_tokens("LAYOUT_split_3x6_3"), "LAYOUT");
        assert_eq!(strip_size_tokens("LAYOUT_ortho_4x12"), "LAYOUT_ortho");
        assert!(keyboard_in_layout_name("foo/planck", "LAYOUT_foo"));
        assert!(!keyboard_in_layout_name("planck/rev6", "LAYOUT_planck_mit"));
    }

    #[test]
    fn deep_update_keeps_positions_and_lets_new_win() {
        let mut a: Obj = serde_json::from_str(r#"{"x":1,"f":{"a":true,"b":1},"y":2}"#).unwrap();
        let b: Obj = serde_json::from_str(r#"{"f":{"b":2,"c":3},"z":0,"x":9}"#).unwrap();
        deep_update(&mut a, b);
        assert_eq!(
            crate::json::to_compact(&Value::Object(a)),
            r#"{"x":9,"f":{"a":true,"b":2,"c":3},"y":2,"z":0}"#
        );
    }
}
