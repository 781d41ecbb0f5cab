//! Every keymap the stock Configurator bundles (`public/keymaps/` of qmk/qmk_configurator) is
//! real client input: each must pass the request validation. Opt-in: set
//! OVEN_CONFIGURATOR_KEYMAPS to that folder (a checkout of the Configurator).

use std::path::PathBuf;

use oven::keymap::KeymapRequest;

/// Every `.json` file under `dir`.
fn keymap_files(dir: PathBuf) -> Vec<PathBuf> {
    let (mut stack, mut out) = (vec![dir], Vec::new());
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn every_bundled_configurator_keymap_is_accepted() {
    let Some(dir) = std::env::var_os("OVEN_CONFIGURATOR_KEYMAPS") else {
        eprintln!("skipped: set OVEN_CONFIGURATOR_KEYMAPS to qmk_configurator/public/keymaps");
        return;
    };
    let (mut seen, mut refused) = (0, Vec::new());
    for p in keymap_files(PathBuf::from(dir)) {
        seen += 1;
        if let Err(err) = KeymapRequest::from_body(&std::fs::read(&p).unwrap()) {
            refused.push(format!("{}: {err} {:?}", p.display(), err.detail));
        }
    }
    eprintln!("{seen} bundled keymaps, {} refused", refused.len());
    assert!(seen > 0, "no keymaps found");
    assert!(refused.is_empty(), "{refused:#?}");
}

/// The pre-compile checks refuse no keymap the Configurator bundles (they are QMK's own
/// default keymaps, which build): a refusal here is a keymap Oven would wrongly fail. Opt-in:
/// OVEN_CONFIGURATOR_KEYMAPS as above and OVEN_QMK_HOME, a qmk_firmware tree.
#[test]
fn no_bundled_configurator_keymap_is_refused_before_compiling() {
    let (Some(dir), Some(home)) = (
        std::env::var_os("OVEN_CONFIGURATOR_KEYMAPS"),
        std::env::var_os("OVEN_QMK_HOME"),
    ) else {
        eprintln!("skipped: set OVEN_CONFIGURATOR_KEYMAPS and OVEN_QMK_HOME");
        return;
    };
    let home = PathBuf::from(home);
    let aliases = oven::worker::tree::load_aliases(&home);
    let (mut checked, mut unknown, mut refused) = (0, 0, Vec::new());
    for p in keymap_files(PathBuf::from(dir)) {
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&p).unwrap())
        else {
            continue;
        };
        let kb = doc["keyboard"].as_str().unwrap_or_default();
        // Keyboards the Configurator still lists but this tree dropped are not the
        // precheck's to judge.
        let Some(folder) = oven::worker::tree::resolve_keyboard(&home, &aliases, kb) else {
            unknown += 1;
            continue;
        };
        checked += 1;
        if let Err(r) = oven::worker::precheck::check(&home, &folder, &doc) {
            refused.push(format!("{}: {} {}", p.display(), r.failure, r.message));
        }
    }
    eprintln!(
        "{checked} keymaps checked against the tree ({unknown} of keyboards it lacks), {} refused",
        refused.len()
    );
    assert!(checked > 0, "no keymaps found");
    assert!(refused.is_empty(), "{refused:#?}");
}
