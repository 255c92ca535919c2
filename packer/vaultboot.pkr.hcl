# Bakes a vaultboot release into an AMI. Run from the repository root:
#   packer init packer/
#   packer build -var distro=debian-12 -var arch=arm64 \
#     -var vaultboot_package=vaultboot_0.1.0_arm64.deb \
#     -var vaultboot_package_sha256=<its line of the verified SHA256SUMS> \
#     -var vaultboot_config=path/to/config.toml packer/
# See README.md in this directory.

locals {
  bake = "/tmp/vaultboot-bake"
  # Runs the provisioner's script as root with its environment.
  sudo = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"

  # The source AMIs: official images, most recent match of the name filter.
  # (Packer 1.6.6, which CI validates with, cannot refer to a local from another local.)
  distros = {
    "debian-12" = {
      owners       = ["136693071363"] # Debian
      name         = { x86_64 = "debian-12-amd64-*", arm64 = "debian-12-arm64-*" }
      ssh_username = "admin"
    }
    "ubuntu-24.04" = {
      owners = ["099720109477"] # Canonical
      name = {
        x86_64 = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
        arm64  = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-*"
      }
      ssh_username = "ubuntu"
    }
    "al2023" = {
      owners       = ["137112412989"] # Amazon
      name         = { x86_64 = "al2023-ami-2023.*-kernel-*-x86_64", arm64 = "al2023-ami-2023.*-kernel-*-arm64" }
      ssh_username = "ec2-user"
    }
  }

  instance_type  = var.instance_type != "" ? var.instance_type : (var.arch == "arm64" ? "t4g.micro" : "t3.micro")
  package_is_url = substr(var.vaultboot_package, 0, 8) == "https://"
  # Uploaded into the bake directory under their own names: the install script, the
  # package unless it is a URL (the instance downloads it then), the CA if any.
  uploads = compact([
    "${path.root}/install-release.sh",
    substr(var.vaultboot_package, 0, 8) == "https://" ? "" : var.vaultboot_package,
    var.vault_ca_cert,
  ])
  ami_name = "${var.ami_name_prefix}-${var.distro}-${var.arch}-${regex_replace(timestamp(), "[- TZ:]", "")}"
}

source "amazon-ebs" "vaultboot" {
  region        = var.region
  instance_type = local.instance_type
  ssh_username  = local.distros[var.distro].ssh_username
  ami_name      = local.ami_name

  source_ami_filter {
    filters = {
      name                = local.distros[var.distro].name[var.arch]
      architecture        = var.arch
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = local.distros[var.distro].owners
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
    Name      = local.ami_name
    vaultboot = "baked"
    distro    = var.distro
    arch      = var.arch
  })
}

build {
  sources = ["source.amazon-ebs.vaultboot"]

  provisioner "shell" {
    inline = ["rm -rf ${local.bake}", "mkdir -m 0700 ${local.bake}"]
  }

  provisioner "file" {
    sources     = local.uploads
    destination = "${local.bake}/"
  }

  provisioner "file" {
    source      = var.vaultboot_config
    destination = "${local.bake}/config.toml"
  }

  provisioner "file" {
    source      = "${path.root}/cleanup.sh"
    destination = "${local.bake}/cleanup.sh"
  }

  # The release, checked against its SHA-256 before anything is installed, with the
  # distribution's package manager (or the tarball's install.sh); then the config,
  # the Vault CA where the config expects it, the gating drop-ins, and the checks:
  # `vaultboot check` accepts the baked config, the units are enabled and were
  # never started.
  provisioner "shell" {
    execute_command = local.sudo
    environment_vars = [
      "VAULTBOOT_PACKAGE=${local.package_is_url ? var.vaultboot_package : "${local.bake}/${basename(var.vaultboot_package)}"}",
      "VAULTBOOT_PACKAGE_SHA256=${var.vaultboot_package_sha256}",
      "VAULTBOOT_CONFIG=${local.bake}/config.toml",
      "VAULT_CA_CERT=${var.vault_ca_cert == "" ? "" : "${local.bake}/${basename(var.vault_ca_cert)}"}",
      "GATE_UNITS=${join(" ", var.gate_units)}",
      "ARCH=${var.arch}",
    ]
    inline = ["sh ${local.bake}/install-release.sh"]
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

  # Records the AMI id (artifact_id "region:ami-...") with what went into it.
  post-processor "manifest" {
    output     = var.manifest
    strip_path = true
    custom_data = {
      distro                   = var.distro
      arch                     = var.arch
      vaultboot_package        = basename(var.vaultboot_package)
      vaultboot_package_sha256 = var.vaultboot_package_sha256
    }
  }
}
