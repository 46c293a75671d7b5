//! `apiserver-guard verify`: the policy from flags, environment and config
//! (discovery cache as fallback), one verification, its report for a person
//! or as JSON, and the exit code. The verification itself is `verify`'s.

use crate::cli::{OutputFormat, VerifyArgs};
use crate::core::validate::validate;
use crate::error::{Error, Result};
use crate::verify::{failed, options, verify};

/// `apiserver-guard verify`: returns the exit code (errors are printed by the caller).
pub fn command(args: &VerifyArgs) -> Result<i32> {
    let policy = crate::policy_source::one_shot(&args.policy, crate::policy_source::Cache::Fallback)?;
    validate(&policy).map_err(Error::BadInput)?;
    let opts = options(args)?;
    let report = match verify(&policy, &opts) {
        Ok(r) => r,
        Err(e @ Error::Runtime(_)) if args.output == OutputFormat::Json => {
            let r = failed(&opts, e.to_string());
            println!("{}", r.to_json());
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    match args.output {
        OutputFormat::Json => println!("{}", report.to_json()),
        OutputFormat::Text => print!("{}", report.to_text()),
    }
    Ok(report.exit_code)
}
