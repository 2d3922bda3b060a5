//! `agent plan`: what a deployment would do on each host; touches nothing.

use crate::exit;
use crate::plan::Plan;
use crate::printer;

pub fn run(plan: &Plan, json: bool) -> anyhow::Result<u8> {
    printer::plan(plan, json)?;
    Ok(exit::OK)
}
