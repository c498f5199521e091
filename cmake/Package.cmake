# The Debian package `romulus`, made by CPack's DEB generator from the
# install component `romulus` (dist/CMakeLists.txt):
#
#   cmake --build build/release --target romulus romulus_sqlite_preload romulus_qemu_preload \
#     romulus-docs
#   cpack --config build/release/CPackConfig.cmake -B build/release/package
#
# scripts/package does both, then runs lintian. docs/operations.md,
# "Installing from the package", says what is in it and why CPack rather than
# debhelper: the package is built from the same build tree and the same
# install() rules as `cmake --install` and the tests, with no second
# description of the files to keep in step (debian/rules, *.install), and
# without the debhelper toolchain on the build machine; dpkg-shlibdeps still
# computes Depends. What debhelper would add is done here by hand: stripped
# binaries, gzipped man pages (dist/generate.py), copyright, changelog.gz.
#
# Included last from the top-level CMakeLists.txt, after every install() rule.

set(ROMULUS_DEB_MAINTAINER "Romulus maintainers <maintainers@romulus.invalid>" CACHE STRING
    "Maintainer field of the Debian package (set it to whoever distributes it)")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME romulus)
set(CPACK_PACKAGE_VENDOR "Romulus")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${ROMULUS_DEB_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "continuous checkpointing replication of a Linux process to a backup")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "Romulus protects a stateful program after Xen's Remus: a primary runs it and,
many times a second, pauses it, copies the pages of its memory arena written
since the last checkpoint and streams them to a backup, which commits each
checkpoint whole. Replies to clients are held until the checkpoint that
produced them is acknowledged; if the primary dies, the backup resumes the
program from its last committed checkpoint, and no client has seen a reply
the backup does not have.

This package holds the romulus command, systemd units (romulus-primary@ and
romulus-backup@), a Pacemaker resource agent (ocf:romulus:romulus), the
LD_PRELOAD library that puts an unmodified SQLite program's databases in the
arena, man pages, bash completion, Prometheus alerting rules and a Grafana
dashboard.")
# Native: this is the upstream tree itself, so the version is the project's
# with no Debian revision, and the changelog is changelog.gz.
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "etcd-server, pacemaker, resource-agents, prometheus")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# Our own postinst/postrm (systemctl daemon-reload; logs removed on purge).
# They also keep CPack from adding ldconfig calls for the preload library,
# which is private (lib/romulus/, loaded by path): ldconfig has nothing to do.
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/dist/debian/postinst ${PROJECT_SOURCE_DIR}/dist/debian/postrm)
set(CPACK_STRIP_FILES ON)
# Only what an operator's host needs (the example guests stay in the tree),
# as one package.
set(CPACK_COMPONENTS_ALL romulus)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_GROUPING ALL_COMPONENTS_IN_ONE)
# Installed under /usr whatever the build tree's CMAKE_INSTALL_PREFIX, through
# DESTDIR: the units then get /usr/bin/romulus (not the staging directory)
# from ${CMAKE_INSTALL_PREFIX} at install time.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# cpack (and the `install` target) do not build the whole tree first (its
# "preinstall" step would build the tests and benchmarks too): build what the
# package holds, as scripts/package does, then run cpack.
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY ON)
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR}/package)

# What dh_installdocs and dh_installchangelogs would add: copyright and a
# changelog, in /usr/share/doc/romulus. Only in the package (EXCLUDE_FROM_ALL:
# `cmake --install` without --component leaves them out).
set(ROMULUS_DEB_DIR ${PROJECT_BINARY_DIR}/debian)
string(TIMESTAMP ROMULUS_DEB_DATE "%a, %d %b %Y %H:%M:%S +0000" UTC)  # SOURCE_DATE_EPOCH wins
file(WRITE ${ROMULUS_DEB_DIR}/changelog
"romulus (${PROJECT_VERSION}) unstable; urgency=medium

  * Built from the Romulus source tree (scripts/package).

 -- ${ROMULUS_DEB_MAINTAINER}  ${ROMULUS_DEB_DATE}
")
add_custom_command(OUTPUT ${ROMULUS_DEB_DIR}/changelog.gz
  COMMAND gzip -9nc ${ROMULUS_DEB_DIR}/changelog > ${ROMULUS_DEB_DIR}/changelog.gz
  DEPENDS ${ROMULUS_DEB_DIR}/changelog
  COMMENT "Compressing the Debian changelog")
add_custom_target(romulus-deb-files ALL DEPENDS ${ROMULUS_DEB_DIR}/changelog.gz)
if(TARGET romulus-docs)
  add_dependencies(romulus-docs romulus-deb-files)
endif()
install(FILES ${PROJECT_SOURCE_DIR}/dist/debian/copyright ${ROMULUS_DEB_DIR}/changelog.gz
        DESTINATION share/doc/romulus COMPONENT romulus EXCLUDE_FROM_ALL)
# Where the units read NAME.conf; dpkg leaves it in place while it holds files.
install(DIRECTORY DESTINATION /etc/romulus COMPONENT romulus EXCLUDE_FROM_ALL)
install(FILES ${PROJECT_SOURCE_DIR}/dist/debian/lintian-overrides
        DESTINATION share/lintian/overrides RENAME romulus COMPONENT romulus EXCLUDE_FROM_ALL)

include(CPack)
