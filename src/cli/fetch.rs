//! `bridge fetch`: downloads and verifies the pinned assets through `assets::fetch`.

use crate::assets::{self, PACKAGES};
use crate::error::Result;

pub fn fetch(only: Option<&str>) -> Result<()> {
    let packages = match only {
        Some(name) => vec![assets::package(name)?],
        None => PACKAGES.iter().collect(),
    };
    println!("asset folder: {}", assets::asset_root().display());
    for p in packages {
        assets::fetch(p, &mut |line| println!("{line}"))?;
    }
    Ok(())
}
