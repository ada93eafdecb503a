# bpf_object(NAME SOURCE [HEADERS...])
# Compiles SOURCE (BPF C) with clang at build time and generates a libbpf
# skeleton header NAME.skel.h; the target NAME_skel is an INTERFACE library
# that puts it on the include path. Editing any listed header rebuilds.
find_program(CLANG_BPF clang REQUIRED)
find_program(BPFTOOL bpftool REQUIRED)

set(HOOKER_BPF_GEN ${CMAKE_BINARY_DIR}/bpf)
file(MAKE_DIRECTORY ${HOOKER_BPF_GEN})

# CO-RE: one vmlinux.h from the kernel's BTF, made once per build tree.
add_custom_command(
  OUTPUT ${HOOKER_BPF_GEN}/vmlinux.h
  COMMAND ${BPFTOOL} btf dump file /sys/kernel/btf/vmlinux format c > ${HOOKER_BPF_GEN}/vmlinux.h
  COMMENT "vmlinux.h from /sys/kernel/btf/vmlinux")
add_custom_target(vmlinux_h DEPENDS ${HOOKER_BPF_GEN}/vmlinux.h)

function(bpf_object name src)
  set(obj ${HOOKER_BPF_GEN}/${name}.bpf.o)
  set(skel ${HOOKER_BPF_GEN}/${name}.skel.h)
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${CLANG_BPF} -g -O2 -target bpf -D__TARGET_ARCH_x86 -Wall -Werror
            -I${HOOKER_BPF_GEN} -I${CMAKE_SOURCE_DIR}/bpf
            -c ${CMAKE_CURRENT_SOURCE_DIR}/${src} -o ${obj}
    DEPENDS ${src} ${ARGN}
    COMMENT "BPF ${src}")
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${BPFTOOL} gen skeleton ${obj} name ${name}_bpf > ${skel}
    DEPENDS ${obj}
    COMMENT "skeleton ${name}.skel.h")
  add_custom_target(${name}_skel_gen DEPENDS ${skel})
  add_dependencies(${name}_skel_gen vmlinux_h)  # generated in another directory
  add_library(${name}_skel INTERFACE)
  add_dependencies(${name}_skel ${name}_skel_gen)
  target_include_directories(${name}_skel INTERFACE ${HOOKER_BPF_GEN})
endfunction()
