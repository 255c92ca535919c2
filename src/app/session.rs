//! What `run` and `plan` share up to the login: the clients, the instance as IMDS describes
//! it, and the choice of what to fetch.

use super::select::{self, Choice};
use super::{instance, login, Error, Mode};
use crate::auth::{iam, Token};
use crate::config::{AuthMethod, Config, SecretConfig};
use crate::imds::{self, Imds};
use crate::issued::Issued;
use crate::log::{Event, Level, Log};
use crate::pending::Found;
use crate::retry::Policy;
use crate::status::OutputStatus;
use crate::template::Facts;
use crate::vault::Vault;

/// What a run fetches, and what it leaves.
pub(super) struct Chosen<'c> {
    /// In configuration order.
    pub to_fetch: Vec<&'c SecretConfig>,
    /// PKI issues whose certificate in place cannot stay: secret name, why.
    pub renewing: Vec<(String, String)>,
    /// The outputs of the secrets left alone.
    pub skipped: Vec<OutputStatus>,
}

pub(super) struct Session<'p> {
    pub vault: Vault,
    imds: Imds<'p>,
    env_credentials: Option<iam::Credentials>,
    identity: Option<imds::Identity>,
    pub facts: Facts,
    signed: Option<String>,
}

impl<'p> Session<'p> {
    /// The Vault client (its connections opened ahead when something may be fetched), and the
    /// instance read from IMDS (off EC2 with iam credentials from the environment, IMDS is read
    /// only when a template needs it).
    pub fn open(
        config: &Config,
        mode: Mode,
        log: &Log,
        policy: &'p Policy,
    ) -> Result<Session<'p>, Error> {
        let vault = Vault::new(&config.vault).map_err(Error::PreparingVaultClient)?;
        // One connection per secret, read all at once after the login (the login's is the
        // first): their TCP and TLS set-up overlaps the IMDS reads and the nonce. Not when
        // nothing may be fetched: such a run makes no Vault request at all.
        if select::may_fetch(config, mode) {
            let login = format!("auth/{}/login", config.auth.mount);
            vault.warm_up(&login, config.secrets.len().max(1));
        }
        let imds = Imds::new(&config.imds, policy);
        let env_credentials = match config.auth.method {
            // Half-set AWS_* variables are an error, not a silent fall-back to IMDS.
            AuthMethod::Iam => {
                iam::Credentials::from_env_checked().map_err(Error::CheckingEnvironment)?
            }
            AuthMethod::Ec2 => None,
        };
        let (identity, facts, signed) =
            instance::read_if_needed(config, log, &imds, policy, env_credentials.is_some())?;
        Ok(Session {
            vault,
            imds,
            env_credentials,
            identity,
            facts,
            signed,
        })
    }

    /// Which secrets to fetch (in configuration order), why certificates are issued again, and
    /// the outputs of the secrets skipped; renewals and skips are logged with the reason.
    pub fn choose<'c>(
        &self,
        config: &'c Config,
        mode: Mode,
        state: (&Found, &Issued),
        log: &Log,
    ) -> Chosen<'c> {
        let choices = select::choose(config, mode, &self.facts, state.0, state.1);
        let mut chosen = Chosen {
            to_fetch: Vec::new(),
            renewing: Vec::new(),
            skipped: select::skipped_outputs(config, &choices, &self.facts),
        };
        for (secret, choice) in config.secrets.iter().zip(choices) {
            match choice {
                Choice::Fetch => chosen.to_fetch.push(secret),
                Choice::Renew(why) => {
                    log.info(&format!(
                        "secret {:?} needs a new certificate: {why}",
                        secret.name
                    ));
                    chosen.to_fetch.push(secret);
                    chosen.renewing.push((secret.name.clone(), why));
                }
                Choice::Skip(why) => log.info(&format!("secret {:?} skipped: {why}", secret.name)),
                Choice::Keep(why) => log.event(
                    Level::Info,
                    Event::CertificateKept,
                    &[("VAULTBOOT_SECRET", &secret.name)],
                    &format!("secret {:?} skipped: {why}", secret.name),
                ),
            }
        }
        chosen
    }

    /// Logs in with the method configured; the credentials or signed document are used once.
    pub fn login(&mut self, config: &Config, log: &Log, policy: &Policy) -> Result<Token, Error> {
        match (config.auth.method, &self.identity, self.signed.take()) {
            (AuthMethod::Ec2, Some(identity), Some(pkcs7)) => {
                login::login_ec2(config, log, &self.vault, policy, identity, &pkcs7)
            }
            _ => login::login_iam(
                config,
                log,
                &self.vault,
                &self.imds,
                policy,
                self.env_credentials.take(),
            ),
        }
    }
}
