variable "region" {
  type        = string
  description = "AWS region to build the AMI in."
  default     = "us-east-1"
}

variable "distro" {
  type        = string
  description = "Source distribution: debian-12, ubuntu-24.04 or al2023 (owners, name filters and SSH users in vaultboot.pkr.hcl)."
  default     = "debian-12"
  validation {
    condition     = contains(["debian-12", "ubuntu-24.04", "al2023"], var.distro)
    error_message = "The distro must be one of debian-12, ubuntu-24.04, al2023."
  }
}

variable "arch" {
  type        = string
  description = "Architecture of the source AMI and the instance: x86_64 or arm64 (Graviton). The release package must be the same architecture."
  default     = "x86_64"
  validation {
    condition     = contains(["x86_64", "arm64"], var.arch)
    error_message = "The arch must be x86_64 or arm64."
  }
}

variable "instance_type" {
  type        = string
  description = "Instance type of the build instance; empty: t3.micro for x86_64, t4g.micro for arm64."
  default     = ""
}

variable "ami_name_prefix" {
  type        = string
  description = "Prefix of the AMI name; distro, arch and a UTC timestamp are appended."
  default     = "vaultboot"
}

variable "vaultboot_package" {
  type        = string
  description = "The release artifact to install: a local path or an https:// URL of vaultboot_VERSION_DEBARCH.deb (debian-12, ubuntu-24.04), vaultboot-VERSION-1.RPMARCH.rpm (al2023) or vaultboot-VERSION-ARCH-linux.tar.gz (any)."
  validation {
    condition = (
      substr(var.vaultboot_package, length(var.vaultboot_package) - 4, 4) == ".deb" ||
      substr(var.vaultboot_package, length(var.vaultboot_package) - 4, 4) == ".rpm" ||
      substr(var.vaultboot_package, length(var.vaultboot_package) - 7, 7) == ".tar.gz"
    )
    error_message = "The vaultboot_package must end in .deb, .rpm or .tar.gz."
  }
}

variable "vaultboot_package_sha256" {
  type        = string
  description = "SHA-256 of vaultboot_package, from the release's signed SHA256SUMS; checked on the build instance before anything is installed."
  validation {
    condition     = length(var.vaultboot_package_sha256) == 64 && lower(var.vaultboot_package_sha256) == var.vaultboot_package_sha256
    error_message = "The vaultboot_package_sha256 must be 64 lower-case hex digits (a line of SHA256SUMS)."
  }
}

variable "vaultboot_config" {
  type        = string
  description = "vaultboot TOML config baked as /etc/vaultboot/config.toml (no secrets in it; user-data can replace it per instance). `vaultboot check` must accept it on the image."
}

variable "vault_ca_cert" {
  type        = string
  description = "PEM file of the CA that signed Vault's certificate, installed where the config's vault.ca_cert says (required when the config sets ca_cert and the image does not have that file); empty: none."
  default     = ""
}

variable "gate_units" {
  type        = list(string)
  description = "Units of the image that must start only after vaultboot succeeded (Requires= + After= drop-in; vaultboot.service starts them once a retry succeeds), e.g. [\"nginx.service\"]."
  default     = []
}

variable "manifest" {
  type        = string
  description = "Where the manifest post-processor records the AMI id (JSON)."
  default     = "packer-manifest.json"
}

variable "tags" {
  type        = map(string)
  description = "Extra tags for the AMI."
  default     = {}
}
