# Packaging: `cmake --build build --target package` makes build/mtlsgw_<version>_amd64.deb
# (CPack DEB): the binary (its RPATH names BoringSSL's folder, as installed by Debian),
# the systemd unit, /etc/mtlsgw/mtlsgw.conf as a conffile that passes `check` as
# installed, mtlsgw(8) and mtlsgw.conf(5) made from etc/man/*.scd by scdoc, bash
# completion, and /usr/share/doc/mtlsgw (README, the full commented example).
set(PKG_SRC ${CMAKE_SOURCE_DIR}/etc/debian)
set(PKG_OUT ${CMAKE_BINARY_DIR}/pkg)
file(MAKE_DIRECTORY ${PKG_OUT})

find_program(SCDOC scdoc)
set(man_outputs)
foreach(page mtlsgw.8 mtlsgw.conf.5)
  if(SCDOC)
    add_custom_command(OUTPUT ${PKG_OUT}/${page}.gz
      COMMAND ${SCDOC} < ${CMAKE_SOURCE_DIR}/etc/man/${page}.scd > ${PKG_OUT}/${page}
      COMMAND gzip -9nf ${PKG_OUT}/${page}
      DEPENDS ${CMAKE_SOURCE_DIR}/etc/man/${page}.scd VERBATIM)
    list(APPEND man_outputs ${PKG_OUT}/${page}.gz)
  endif()
endforeach()
add_custom_command(OUTPUT ${PKG_OUT}/changelog.gz
  COMMAND sed "s/@VERSION@/${PROJECT_VERSION}/" ${PKG_SRC}/changelog > ${PKG_OUT}/changelog
  COMMAND gzip -9nf ${PKG_OUT}/changelog
  DEPENDS ${PKG_SRC}/changelog VERBATIM)
add_custom_target(mtlsgw_docs ALL DEPENDS ${man_outputs} ${PKG_OUT}/changelog.gz)
# The unit as installed runs /usr/bin/mtlsgw.
file(READ ${CMAKE_SOURCE_DIR}/etc/mtlsgw.service unit)
string(REPLACE "/usr/local/bin/mtlsgw" "/usr/bin/mtlsgw" unit "${unit}")
file(WRITE ${PKG_OUT}/mtlsgw.service "${unit}")

install(FILES ${PKG_OUT}/mtlsgw.service DESTINATION /lib/systemd/system)
install(FILES ${PKG_SRC}/mtlsgw.conf DESTINATION /etc/mtlsgw)
if(SCDOC)
  install(FILES ${PKG_OUT}/mtlsgw.8.gz DESTINATION share/man/man8)
  install(FILES ${PKG_OUT}/mtlsgw.conf.5.gz DESTINATION share/man/man5)
endif()
install(FILES ${CMAKE_SOURCE_DIR}/etc/bash-completion/mtlsgw DESTINATION share/bash-completion/completions)
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${PKG_SRC}/copyright ${PKG_OUT}/changelog.gz
        DESTINATION share/doc/mtlsgw)
install(FILES ${CMAKE_SOURCE_DIR}/etc/mtlsgw.conf DESTINATION share/doc/mtlsgw/examples)
# Debian installs BoringSSL in a private folder (android-libboringssl); the binary's
# RUNPATH names it, as Debian's own android-tools binaries do.
install(FILES ${PKG_SRC}/lintian-overrides DESTINATION share/lintian/overrides RENAME mtlsgw)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME mtlsgw)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_PACKAGE_CONTACT "mtlsgw maintainers <maintainers@mtlsgw.invalid>")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "client-side mutual-TLS gateway")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "Local applications use mtlsgw as an ordinary proxy (SOCKS5, SOCKS4a,
HTTP CONNECT, http_proxy requests), a fixed forward listener or a transparent
one; a policy table maps each destination (and, optionally, each local
caller) to a client identity, and mtlsgw carries the connection over mutual
TLS with BoringSSL.")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS ${BORINGSSL_LIB_DIR})
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
# PKCS#11 modules for keys in tokens (README, "Keys in hardware tokens").
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "softhsm2, opensc-pkcs11, libtpm2-pkcs11-1")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${PKG_SRC}/postinst ${PKG_SRC}/postrm ${PKG_SRC}/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_STRIP_FILES ON)
include(CPack)
