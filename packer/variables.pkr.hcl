variable "region" {
  type        = string
  description = "AWS region to build the AMI in."
  default     = "us-east-1"
}

variable "source_ami_name" {
  type        = string
  description = "Name filter of the source AMI (most recent match wins)."
  default     = "debian-12-amd64-*"
}

variable "source_ami_owners" {
  type        = list(string)
  description = "Accounts allowed to own the source AMI (136693071363: Debian's official images)."
  default     = ["136693071363"]
}

variable "instance_type" {
  type        = string
  description = "Instance type of the build instance."
  default     = "t3.micro"
}

variable "ssh_username" {
  type        = string
  description = "Login user of the source AMI (admin on Debian)."
  default     = "admin"
}

variable "ami_name_prefix" {
  type        = string
  description = "Prefix of the AMI name; a UTC timestamp is appended."
  default     = "vaultboot-debian-12"
}

variable "vaultboot_binary" {
  type        = string
  description = "Static vaultboot binary to install; empty: target/x86_64-unknown-linux-musl/release/vaultboot of this repository."
  default     = ""
}

variable "vaultboot_config" {
  type        = string
  description = "vaultboot TOML config baked as /etc/vaultboot/config.toml (no secrets in it; user-data can replace it per instance). `vaultboot check` must accept it."
}

variable "gate_units" {
  type        = list(string)
  description = "Units of the image that must start only after vaultboot succeeded (Requires= + After= drop-in), e.g. [\"nginx.service\"]."
  default     = []
}

variable "tags" {
  type        = map(string)
  description = "Extra tags for the AMI."
  default     = {}
}
