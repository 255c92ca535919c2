# Bakes vaultboot into an AMI. Run from the repository root after building the
# static binary:
#   packer init packer/
#   packer build -var vaultboot_config=path/to/config.toml packer/
# See README.md in this directory for the versions this needs.

locals {
  stamp  = regex_replace(timestamp(), "[- TZ:]", "")
  binary = var.vaultboot_binary != "" ? var.vaultboot_binary : "${path.root}/../target/x86_64-unknown-linux-musl/release/vaultboot"
  bake   = "/tmp/vaultboot-bake"
  # Runs the provisioner's script as root with its environment.
  sudo = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
}

source "amazon-ebs" "debian" {
  region        = var.region
  instance_type = var.instance_type
  ssh_username  = var.ssh_username
  ami_name      = "${var.ami_name_prefix}-${local.stamp}"

  source_ami_filter {
    filters = {
      name                = var.source_ami_name
      architecture        = "x86_64"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = var.source_ami_owners
    most_recent = true
  }

  # The build instance answers IMDSv2 only, like the instances will.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  # Instances launched from the AMI get IMDSv2-only metadata (ImdsSupport=v2.0).
  imds_support = "v2.0"

  tags = merge(var.tags, {
    Name      = "${var.ami_name_prefix}-${local.stamp}"
    vaultboot = "baked"
  })
}

build {
  sources = ["source.amazon-ebs.debian"]

  provisioner "shell" {
    inline = ["rm -rf ${local.bake}", "mkdir -m 0700 ${local.bake}"]
  }

  provisioner "file" {
    source      = local.binary
    destination = "${local.bake}/vaultboot"
  }

  # A directory without a trailing slash is uploaded as bake/dist.
  provisioner "file" {
    source      = "${path.root}/../dist"
    destination = "${local.bake}/"
  }

  provisioner "file" {
    source      = "${path.root}/install.sh"
    destination = "${local.bake}/install.sh"
  }

  provisioner "file" {
    source      = "${path.root}/cleanup.sh"
    destination = "${local.bake}/cleanup.sh"
  }

  provisioner "file" {
    source      = var.vaultboot_config
    destination = "${local.bake}/config.toml"
  }

  # One install script, the same the VM boot test uses: owners, modes, units
  # enabled (cloud-init is left as the distribution ships it). Then the baked config is checked
  # offline; the build fails if vaultboot refuses it.
  provisioner "shell" {
    execute_command  = local.sudo
    environment_vars = ["GATE_UNITS=${join(" ", var.gate_units)}"]
    inline = [
      "set -eu",
      "sh ${local.bake}/install.sh ${local.bake}/vaultboot ${local.bake}/dist ${local.bake}/config.toml",
      "/usr/local/sbin/vaultboot --version",
      "/usr/local/sbin/vaultboot check --config /etc/vaultboot/config.toml",
      "systemctl is-enabled vaultboot.service vaultboot-refresh.timer",
    ]
  }

  # Last: nothing instance-specific may be baked (vaultboot state and outputs,
  # cloud-init instance state, machine-id, host keys).
  provisioner "shell" {
    execute_command = local.sudo
    inline = [
      "set -eu",
      "sh ${local.bake}/cleanup.sh",
      "rm -rf ${local.bake}",
    ]
  }
}
