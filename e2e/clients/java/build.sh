#!/usr/bin/env bash
# Builds the Java Remoting drivers against the official rocketmq-client 5.x and 4.9.8
# (java/target/classes-5, classes-4, class paths in target/cp-5.txt, cp-4.txt) and the Spring Boot
# application on rocketmq-spring-boot-starter (spring/target/classes-boot, cp-boot.txt), and the gRPC
# driver on rocketmq-client-java 5.0.8 (java-grpc/target/classes-grpc, cp-grpc.txt). Maven fetches the
# jars into ~/.m2 once; classes are rebuilt only when their sources change.
set -euo pipefail
clients=$(cd "$(dirname "$0")/.." && pwd)

# build DIR NAME [MAVEN ARGS...]: DIR/target/classes-NAME from DIR/src/main, class path in cp-NAME.txt.
build() {
  local dir=$1 name=$2
  shift 2
  local out=$dir/target/classes-$name
  local sum
  sum=$(cat "$dir/pom.xml" "$0" $(find "$dir/src/main" -type f | sort) | sha256sum | cut -c1-16)
  [ "$(cat "$out/.stamp" 2>/dev/null)" = "$sum" ] && return 0
  (cd "$dir" && mvn -q -B "$@" dependency:build-classpath -Dmdep.outputFile="target/cp-$name.txt")
  rm -rf "$out" && mkdir -p "$out"
  javac -nowarn -d "$out" -cp "$(cat "$dir/target/cp-$name.txt")" $(find "$dir/src/main/java" -name '*.java')
  if [ -d "$dir/src/main/resources" ]; then cp -r "$dir/src/main/resources/." "$out/"; fi
  echo "$sum" > "$out/.stamp"
}

build "$clients/java" 5 -Drocketmq.client.version=5.3.3
build "$clients/java" 4 -Drocketmq.client.version=4.9.8
build "$clients/spring" boot
build "$clients/java-grpc" grpc
