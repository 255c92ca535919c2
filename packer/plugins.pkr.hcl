# Kept in a file of its own: Packer 1.6.6 (Debian 12's package) rejects the
# `required_plugins` block, so CI checks every other file of this directory
# with that version and leaves this one out. Real builds need Packer >= 1.7
# (`packer init` installs the plugin) and the Amazon plugin >= 1.2.2, the first
# whose amazon-ebs builder has `imds_support`.
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    amazon = {
      version = ">= 1.2.2"
      source  = "github.com/hashicorp/amazon"
    }
  }
}
