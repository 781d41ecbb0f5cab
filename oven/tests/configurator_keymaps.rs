//! Every keymap the stock Configurator bundles (`public/keymaps/` of qmk/qmk_configurator) is
//! real client input: each must pass the request validation. Opt-in: set
//! OVEN_CONFIGURATOR_KEYMAPS to that folder (a checkout of the Configurator).

use oven::keymap::KeymapRequest;

#[test]
fn every_bundled_configurator_keymap_is_accepted() {
    let Some(dir) = std::env::var_os("OVEN_CONFIGURATOR_KEYMAPS") else {
        eprintln!("skipped: set OVEN_CONFIGURATOR_KEYMAPS to qmk_configurator/public/keymaps");
        return;
    };
    let mut stack = vec![std::path::PathBuf::from(dir)];
    let (mut seen, mut refused) = (0, Vec::new());
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                seen += 1;
                if let Err(err) = KeymapRequest::from_body(&std::fs::read(&p).unwrap()) {
                    refused.push(format!("{}: {err} {:?}", p.display(), err.detail));
                }
            }
        }
    }
    eprintln!("{seen} bundled keymaps, {} refused", refused.len());
    assert!(seen > 0, "no keymaps found");
    assert!(refused.is_empty(), "{refused:#?}");
}
